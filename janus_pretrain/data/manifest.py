"""Read and check the manifest.json written by data_prep/shard_genomes.py; resolve run mixtures."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from janus_pretrain.atomic_io import read_json
from janus_pretrain.tokenizer import TOKENIZER_VERSION

# written by data/prepare.py and checked here: the one definition of the on-disk format.
# v2 added each shard's sha256 and byte size. v1 manifests are still read (shards then checked by
# sample count only, with a warning), so a run on old shards keeps going; resharding adds digests.
MANIFEST_FORMAT = "janus-shards-v2"
LEGACY_FORMATS = ("janus-shards-v1",)
SPLITS = ("train", "valid", "test")
log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A missing or inconsistent shard manifest; the message names the file and the key."""


def read_manifest(path: str | Path) -> dict:
    """manifest.json (or the directory holding it) as a dict, checked; adds "root" (its directory).

    Shard paths under species.<name>.splits.<split>.shards[*].path are made absolute; they must be
    relative and stay inside the manifest's directory. Species weights must be finite and >= 0.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    manifest = read_json(path, ManifestError, f"shard manifest not found: {path}; create it with "
                                              f"janus shard --genomes GENOMES.yaml --out DIR --window-bp N")
    digests = manifest.get("format") == MANIFEST_FORMAT
    if not digests and manifest.get("format") not in LEGACY_FORMATS:
        raise ManifestError(f"{path}: 'format' is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}; "
                            f"reshard with this version's janus shard")
    if not digests:
        log.warning("%s: format %s lists no shard digests, so shards are checked by sample count only "
                    "(data.verify_shards has nothing to verify); reshard into a new directory to add them",
                    path, manifest["format"])
    if manifest.get("tokenizer_version") != TOKENIZER_VERSION:
        raise ManifestError(f"{path}: shards were made for tokenizer {manifest.get('tokenizer_version')!r}, "
                            f"this code is {TOKENIZER_VERSION!r}; re-shard")
    for key in ("window_bp", "species", "species_order"):
        if key not in manifest:
            raise ManifestError(f"{path}: missing key '{key}'")
    root = path.parent.resolve()
    manifest["root"] = str(root)
    for name in manifest["species_order"]:
        entry = manifest["species"].get(name)
        if entry is None:
            raise ManifestError(f"{path}: species_order lists '{name}' but species.{name} is missing")
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ManifestError(f"{path}: species.{name}.weight must be a finite number >= 0 (got {weight!r}); "
                                f"the manifest was edited by hand: fix it, reshard, or set data.mixture")
        for split in SPLITS:
            for shard in entry["splits"][split]["shards"]:
                if digests and not ("sha256" in shard and "bytes" in shard):
                    raise ManifestError(f"{path}: species.{name}.splits.{split} lists {shard.get('path')} without "
                                        f"its sha256 and bytes; the manifest was edited by hand: reshard")
                relative = Path(str(shard.get("path", "")))
                full = (root / relative).resolve()
                if relative.is_absolute() or ".." in relative.parts or not full.is_relative_to(root):
                    raise ManifestError(f"{path}: species.{name}.splits.{split} lists {shard.get('path')!r}, which "
                                        f"is not a path inside {root}; shard paths are relative to the manifest's "
                                        f"directory: reshard, or copy the shards there")
                if not full.is_file():
                    raise ManifestError(f"{path}: species.{name}.splits.{split} lists {shard['path']}, "
                                        f"which is missing (incomplete copy of the shard directory?)")
                shard["path"] = str(full)
    return manifest


def mixture_weights(manifest: dict, override: dict[str, float], where: str = "data.mixture") -> list[float]:
    """Weight per species (manifest order): the run's override where given, else the manifest's."""
    names = manifest["species_order"]
    unknown = sorted(set(override) - set(names))
    if unknown:
        raise ManifestError(f"{where}: unknown species {unknown}; the manifest has {names}")
    weights = []
    for name in names:
        has_train = manifest["species"][name]["splits"]["train"]["samples"] > 0
        if override:  # an explicit mixture lists every species it wants; the rest get 0
            weight = float(override.get(name, 0.0))
            if weight < 0:
                raise ManifestError(f"{where}.{name}: weight must be >= 0 (got {weight})")
            if weight > 0 and not has_train:
                raise ManifestError(f"{where}.{name}: weight {weight} but the species has no train windows")
        else:
            weight = float(manifest["species"][name]["weight"]) if has_train else 0.0
        weights.append(weight)
    if sum(weights) <= 0:
        raise ManifestError(f"{where}: every species has weight 0; nothing to train on")
    return weights
