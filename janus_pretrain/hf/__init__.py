"""Hugging Face transformers entry points for exports (docs/downstream.md, "Use with Hugging Face
transformers"). configuration_janus_dna, modeling_janus_dna and tokenization_janus_dna import
transformers; remote_code (the build step that copies them and the model into an export) does not,
so this package imports nothing here.
"""
