"""The official protocol of the three suites, each value with where it is set in the official code.

Read from github.com/Qihao-Duan/JanusDNA at commit 03cd86e ("final mlp update"); a source is
`file:line` in that tree. This module is the one home of these facts: the task kinds and suites
read them from here, docs/benchmarks.md prints `facts_markdown()` (a test keeps the two equal).

Where the official code says nothing (how a hyper-parameter cell is chosen across seeds, the ddof
of the reported std) the fact says so, and the value we use instead is marked "ours".
"""
from __future__ import annotations

from dataclasses import dataclass

OFFICIAL_REPO = "github.com/Qihao-Duan/JanusDNA"
OFFICIAL_COMMIT = "03cd86e"

NT_CONFIG = "configs/dataset/nucleotide_transformer.yaml"
GB_CONFIG = "configs/dataset/genomic_benchmark.yaml"
NT_SCRIPT = "scripts/benchmark/nt/nt_janusdna.sh"
GB_SCRIPT = "scripts/benchmark/gb/gb_janusdna.sh"
EQTL_TRAIN = "scripts/benchmark/dnalong/eqtl_train_janus_8gpu.sh"
EQTL_EVAL = "scripts/benchmark/dnalong/eqtl_evaluation_janus.sh"
EQTL_CODE = "src/dataloaders/datasets/DNAlong_benchmark.py"
LOADERS = "src/dataloaders/genomics.py"


@dataclass(frozen=True)
class SequenceTask:
    """One classification task of NT or Genomic Benchmarks as the official dataset config sets it."""
    name: str  # the official dataset_name (the NT Hugging Face config / Genomic Benchmarks name)
    classes: int  # d_output
    max_length: int  # bases kept (longer sequences truncated on the right, shorter ones left-padded)
    metric: str  # validation/test metric: mcc, f1_binary (F1 of class 1), accuracy
    train_rows: int  # train_len in the config (rows of the distributed train split)
    source: str  # file:line of its config block


def _nt(name, classes, max_length, metric, rows, line):
    return SequenceTask(name, classes, max_length, metric, rows, f"{NT_CONFIG}:{line}")


# In the order of the DATASETS list of nt_janusdna.sh:15-34.
NT_TASKS = (
    _nt("H3K79me3", 2, 500, "mcc", 25953, 61), _nt("enhancers", 2, 200, "mcc", 14968, 16),
    _nt("enhancers_types", 3, 200, "mcc", 14968, 21), _nt("H3", 2, 500, "mcc", 13468, 26),
    _nt("H3K4me1", 2, 500, "mcc", 28509, 31), _nt("H3K4me2", 2, 500, "mcc", 27614, 36),
    _nt("H3K4me3", 2, 500, "mcc", 33119, 41), _nt("H3K9ac", 2, 500, "mcc", 25003, 46),
    _nt("H3K14ac", 2, 500, "mcc", 29743, 51), _nt("H3K36me3", 2, 500, "mcc", 31392, 56),
    _nt("H4", 2, 500, "mcc", 13140, 66), _nt("H4ac", 2, 500, "mcc", 30685, 71),
    _nt("promoter_all", 2, 300, "f1_binary", 53276, 76), _nt("promoter_no_tata", 2, 300, "f1_binary", 47767, 81),
    _nt("promoter_tata", 2, 300, "f1_binary", 5517, 86),
    _nt("splice_sites_acceptors", 2, 600, "f1_binary", 19961, 91),
    _nt("splice_sites_all", 3, 400, "accuracy", 27000, 96),
    _nt("splice_sites_donors", 2, 600, "f1_binary", 19775, 101),
)


def _gb(name, classes, max_length, rows, line):
    return SequenceTask(name, classes, max_length, "accuracy", rows, f"{GB_CONFIG}:{line}")


# In the order of the DATASETS list of gb_janusdna.sh:15-24; metric: pipeline monitor val/accuracy.
GB_TASKS = (
    _gb("dummy_mouse_enhancers_ensembl", 2, 1024, 1210, 17), _gb("demo_coding_vs_intergenomic_seqs", 2, 200, 100_000, 21),
    _gb("demo_human_or_worm", 2, 200, 100_000, 25), _gb("human_enhancers_cohn", 2, 500, 27791, 29),
    _gb("human_enhancers_ensembl", 2, 512, 154842, 33), _gb("human_ensembl_regulatory", 3, 512, 289061, 37),
    _gb("human_nontata_promoters", 2, 251, 36131, 41), _gb("human_ocr_ensembl", 2, 512, 174756, 45),
)

# configs/dataset/eqtl_benchmark.yaml:19-28 and the check in src/dataloaders/genomics.py:668.
EQTL_TISSUES = ("Adipose_Subcutaneous", "Artery_Tibial", "Cells_Cultured_fibroblasts", "Muscle_Skeletal",
                "Nerve_Tibial", "Skin_Not_Sun_Exposed_Suprapubic", "Skin_Sun_Exposed_Lower_leg", "Thyroid",
                "Whole_Blood")
# The README's DNALONGBENCH table (README.md:46-57) names tissues by these abbreviations (ours to expand).
EQTL_ABBREVIATIONS = {"AS": "Adipose_Subcutaneous", "AT": "Artery_Tibial", "CCF": "Cells_Cultured_fibroblasts",
                      "MS": "Muscle_Skeletal", "NT": "Nerve_Tibial", "SNSES": "Skin_Not_Sun_Exposed_Suprapubic",
                      "SSELL": "Skin_Sun_Exposed_Lower_leg", "Thyroid": "Thyroid", "WB": "Whole_Blood"}


@dataclass(frozen=True)
class FinetuneProtocol:
    """How one suite's tasks are finetuned and scored (NT and Genomic Benchmarks)."""
    lrs: tuple[float, ...]  # learning-rate grid
    batch_sizes: tuple[int, ...]  # batch-size grid (also the evaluation batch size)
    seeds: tuple[int, ...]  # run seeds; each also seeds its validation split
    max_epochs: int  # epochs per run; the test uses the epoch with the best validation metric
    valid_fraction: float  # share of train held out for validation, per seed
    split_rule: str  # which library's seeded split cuts it (protocol.validation_split)
    padding_side: str = "left"  # truncate on the right to max_length, then pad on the left
    pooling: str = "mean_all_positions"  # mean over all max_length positions, padding included
    conjoin_test: bool = True  # evaluation: mean of the logits of the sequence and of its reverse complement
    train_random_strand: bool = True  # training (conjoin_test on): each example reverse-complemented with p = 0.5
    optimizer: str = "AdamW, weight decay 0.1, cosine schedule with 1% warm-up, lr_min 0.1 x lr, grad clip 1.0"
    weight_decay: float = 0.1  # the optimizer line as numbers (FinetuneOptions fields)
    warmup_fraction: float = 0.01
    lr_floor: float = 0.1  # lr_min as a fraction of the peak lr


NT_PROTOCOL = FinetuneProtocol(lrs=(1e-3, 2e-3), batch_sizes=(128, 256, 512), seeds=tuple(range(1, 11)),
                               max_epochs=20, valid_fraction=0.1, split_rule="hf_train_test_split")
GB_PROTOCOL = FinetuneProtocol(lrs=(1e-3, 2e-3), batch_sizes=(128, 256, 512), seeds=tuple(range(1, 6)),
                               max_epochs=10, valid_fraction=0.1, split_rule="torch_random_split")


@dataclass(frozen=True)
class EqtlProtocol:
    """DNALongBench eQTL: one finetune per tissue on the alt windows, AUROC on its test subset."""
    lr: float = 4e-4
    global_batch: int = 8  # 8 GPUs x 1 window
    epochs: int = 3
    seed: int = 1
    window: int = 450_000  # seq_len_cutoff: distance filter and padded/cut window length
    tss_flank: int = 3000  # each side of the TSS base (from the data's config file; function defaults)
    region_flank: int = 500  # each side of the variant region
    input: str = "alt"  # the model reads the alt window only
    conjoin_train: bool = False
    conjoin_test: bool = True  # the evaluation script averages the logits of alt and its reverse complement
    score: str = "softmax(logits)[1]"  # written per test record; AUROC over the whole test subset
    pooling: str = "mean_all_positions"
    choose_epoch_on: str = "val/main_loss_epoch (min)"  # monitor; the evaluation loads checkpoints/last.ckpt
    weight_decay: float = 0.1
    lr_floor: float = 0.1  # lr_min 0.1 x lr
    warmup_fraction: float = 0.1  # ours: the official warm-up is epoch-based (warmup_t 0.3 of an epoch, see FACTS)


EQTL_PROTOCOL = EqtlProtocol()


@dataclass(frozen=True)
class Fact:
    """One row of the facts table."""
    what: str
    value: str
    source: str
    note: str = ""


FACTS: tuple[Fact, ...] = (
    Fact("NT data", "Hugging Face InstaDeepAI/nucleotide_transformer_downstream_tasks, per task train/test",
         "src/dataloaders/datasets/nucleotide_transformer_dataset.py:59-64",
         "the original (not _revised) version; loaded with datasets.load_dataset(name=task)"),
    Fact("NT tasks", "18 (names, classes, max_length 200-600, metric per task: NT_TASKS)", f"{NT_SCRIPT}:15-34; {NT_CONFIG}:16-105",
         "metric is mcc for 12 tasks, f1_binary for promoter_* and splice acceptors/donors, accuracy for "
         "splice_sites_all (not MCC everywhere)"),
    Fact("NT grid", "lr {1e-3, 2e-3} x batch {128, 256, 512}, seeds 1-10, 20 epochs", f"{NT_SCRIPT}:36-38,96"),
    Fact("NT validation split", "10% of train, datasets train_test_split(test_size=0.1, seed=run seed), not stratified",
         f"{LOADERS}:412-420; {NT_SCRIPT}:84", "README.md:153 calls it '10-fold cross-validation'; it is 10 seeded random splits"),
    Fact("GB data", "genomic-benchmarks package layout SPLIT/<class>/<id>.txt, classes = sorted directory names",
         "src/dataloaders/datasets/genomic_bench_dataset.py:55-78",
         "files within a class are read in directory order (os order), so split indices are not portable; we sort by name"),
    Fact("GB tasks", "8 (GB_TASKS), accuracy", f"{GB_SCRIPT}:15-24; {GB_CONFIG}:17-48; configs/pipeline/genomic_benchmark.yaml:11-13"),
    Fact("GB grid", "lr {1e-3, 2e-3} x batch {128, 256, 512}, seeds 1-5, 10 epochs", f"{GB_SCRIPT}:26-28,86"),
    Fact("GB validation split", "torch random_split(lengths=[0.1, 0.9], Generator().manual_seed(run seed)), valid first",
         f"{LOADERS}:317-327; {GB_SCRIPT}:74",
         "README.md:142 and the issue say '5-fold cross-validation': there are no folds, only 5 seeded 90/10 splits"),
    Fact("test split", "the distributed test split, read at max_length", f"{LOADERS}:314,409"),
    Fact("epoch choice", "checkpoint with the best validation metric (save_top_k 1), then evaluated on test",
         "train.py:795-808; configs/callbacks/checkpoint.yaml:1-4; configs/pipeline/nucleotide_transformer.yaml:17-19"),
    Fact("grid choice", "not in the official code (scripts launch every cell; no aggregation script)",
         f"{NT_SCRIPT}:115-153",
         "ours: the cell with the best mean validation metric over seeds; its test mean +- std is reported"),
    Fact("std", "not in the official code; the paper's ± (arXiv 2505.17257, Tables 1-2) is max - min over seeds", "-",
         "ours: sample std (ddof 1) over seeds; the published ± is stored as a range (configs/eval/published)"),
    Fact("metric reduction", "per-batch metric, averaged over the batches of the split weighted by batch size (Lightning epoch mean)",
         "train.py:389-409", "MCC/F1 of the whole split differ from this; batch = the run's batch size"),
    Fact("padding", "truncate on the right to max_length, pad on the left with [PAD]", f"{NT_CONFIG}:7-8; {LOADERS}:290-295,385-390; "
         "src/dataloaders/datasets/nucleotide_transformer_dataset.py:76-82"),
    Fact("tokens", "character tokenizer over A C G T N; any other letter (IUPAC codes, lower case) becomes [UNK]",
         f"{LOADERS}:290-295,385-390; src/dataloaders/datasets/hg38_char_tokenizer.py:83-84",
         "ours maps lower case to the same bases and IUPAC codes to N (tokenizer.py)"),
    Fact("pooling", "mean over all positions, padding included (decoder mode pool, use_lengths false)",
         "src/tasks/decoders.py:114-128; configs/pipeline/nucleotide_transformer.yaml:23-26"),
    Fact("rc conjoining at test", "logits of sequence and of its reverse complement (tokenized and padded separately) averaged",
         "src/tasks/decoders.py:164-168; src/models/sequence/dna_embedding.py:283-293; "
         "src/dataloaders/datasets/nucleotide_transformer_dataset.py:90-104", "average of logits, not of probabilities"),
    Fact("training strand", "with conjoin_test on, each training example is reverse-complemented with p = 0.5",
         "src/dataloaders/datasets/nucleotide_transformer_dataset.py:73-74; genomic_bench_dataset.py:87-88", "rc_aug itself is false"),
    Fact("eQTL data", "DNALongBench eQTL: config/gtex_hg38.<tissue>.config, its eQTL_file TSV, eQTL_tabix_file, genome_fa (hg38)",
         f"{LOADERS}:684-688; {EQTL_CODE}:795-831,1001-1025", "paths in the config are relative to the eQTL directory"),
    Fact("eQTL tissues", "9 GTEx tissues (EQTL_TISSUES)", f"configs/dataset/eqtl_benchmark.yaml:19-28; {LOADERS}:668"),
    Fact("eQTL TSV", "header with gene_chrom gene_start gene_end region_chrom region_start region_end gene_id gene_strand "
         "region_id target subset allele1 allele2; other columns ignored", f"{EQTL_CODE}:1078,1089-1102"),
    Fact("eQTL coordinates", "0-based half-open: allele1 = genome[region_start:region_end]", f"{EQTL_CODE}:354-368,1139-1142"),
    Fact("eQTL TSS", "gene_start on +, gene_end - 1 on -; other strands skipped and counted", f"{EQTL_CODE}:1110-1119"),
    Fact("eQTL window", "[min(tss - 3000, region_start - 500), max(tss + 1 + 3000, region_end + 500)), N outside the contig",
         f"{EQTL_CODE}:1119-1138,354-368", "flanks come from the tissue config (function defaults 3000/3000/500/500)"),
    Fact("eQTL config values", "read from each tissue's config (seq_len_cutoff, tss/region flanks upstream and downstream)",
         f"{EQTL_CODE}:1010-1025", "the configs ship with the data, not the repository; the function defaults are "
         "450,000 / 3,000 / 3,000 / 500 / 500 (DNAlong_benchmark.py:1064) and a third-party script reports the shipped ones equal"),
    Fact("eQTL skips", "different chromosomes; gap between the two flanked windows > seq_len_cutoff; strand not +/-",
         f"{EQTL_CODE}:1106-1132", "records of other subsets are dropped uncounted"),
    Fact("eQTL REF check", "genome at the region must equal allele1, else the run stops (assert)", f"{EQTL_CODE}:1140-1142",
         "uppercased genome; ours: an error naming the record, or skipped and counted on request"),
    Fact("eQTL masking", "only when the gap > 0: every tabix region overlapping the gap is set to N if both its ends lie "
         "strictly inside (0, window length); crossing regions are left", f"{EQTL_CODE}:1143-1159",
         "masking applies to ref and alt; third-party analysis reports the tabix file holds the positive eQTLs"),
    Fact("eQTL region query", "regions overlapping [start, end), 0-based half-open: pytabix 0.1 passes the start to tabix unchanged",
         f"janusdna.yml:185; {EQTL_CODE}:1151", "pytabix 0.0.2 (2015) changed query() to 1-based starts; a chromosome "
         "missing from the file stops the official run (query failed), ours masks nothing there"),
    Fact("eQTL alt", "allele2 substituted for genome[region_start:region_end] after masking", f"{EQTL_CODE}:1160-1161"),
    Fact("eQTL strand", "reverse complement ref and alt when gene_start > region_end + region flank", f"{EQTL_CODE}:1162-1165",
         "gene_start, not the TSS: a - strand gene whose body covers the variant is not flipped"),
    Fact("eQTL length", "N-padded on the right or cut to the first seq_len_cutoff bases (450,000), after the flip",
         f"{EQTL_CODE}:1166-1174; configs/dataset/eqtl_benchmark.yaml:4",
         "a kept record whose variant lies past the cut loses it (counted by us)"),
    Fact("eQTL finetune", "alt window only, lr 4e-4, global batch 8 (8 GPUs x 1), 3 epochs, seed 1, no conjoin",
         f"{EQTL_CODE}:1036-1061; {EQTL_TRAIN}:48-61,95,111"),
    Fact("eQTL optimizer", "AdamW weight decay 0.1, grad clip 1.0, cosine to lr_min 0.1 x lr, stepped per epoch "
         "(t_in_epochs) with warmup_t 0.3 from 1e-7", "configs/experiment/hg38/eqtl.yaml:4,37,60-71",
         "ours: the same decay, clip and floor, stepped per optimizer step with a 10% warm-up (epoch-stepped, the "
         "official first epoch runs at the warm-up start lr)"),
    Fact("eQTL evaluation", "conjoin on (alt and its reverse complement), softmax class-1 probability per record, AUROC",
         f"{EQTL_EVAL}:44,66-88; evaluation.py:395-406; evals/auroc.py:14"),
)


def facts_markdown() -> str:
    """The facts table as docs/benchmarks.md shows it."""
    rows = ["| what | value | official source (03cd86e) | note |", "| --- | --- | --- | --- |"]
    rows += [f"| {f.what} | {f.value} | {f.source} | {f.note} |" for f in FACTS]
    return "\n".join(rows) + "\n"


def task(suite: str, name: str) -> SequenceTask:
    """The official task `name` of suite 'nt' or 'gb'; an unknown name lists the known ones."""
    tasks = {"nt": NT_TASKS, "gb": GB_TASKS}[suite]
    for entry in tasks:
        if entry.name == name:
            return entry
    raise KeyError(f"{name!r} is not a task of the {suite} suite (tasks: {[t.name for t in tasks]})")
