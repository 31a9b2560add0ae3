"""Downstream use of exported models: sequence classification, embeddings, zero-shot variant scoring."""
