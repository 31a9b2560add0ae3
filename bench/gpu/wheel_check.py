"""Check the kernel wheels bench/gpu/build_wheels.sh built, on the CPU machine, before any device time.

    .cache/gpu-build/venv/bin/python bench/gpu/wheel_check.py .gpu-wheels/causal_conv1d-*.whl ...

Run with the build venv's python (torch 2.11.0 cu130, CPython 3.12: the device's) and no GPU. For
each wheel: its extension module imports against that torch with the CUDA runtime wheels present;
it exports the functions its package's Python layer calls; its device code is sm_90 alone
(cuobjdump); and the module and attribute that janus_pretrain/model/kernels.py imports
(_CUDA_KERNELS) resolve, and take the arguments the glue passes. Exit 1 naming each failure.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# package -> (extension module, the functions its Python layer calls), read off the sources of
# mamba-ssm 2.3.2.post1 (ops/selective_scan_interface.py) and causal-conv1d 1.7.0 (cpp_functions.py)
EXTENSIONS = {
    "mamba_ssm": ("selective_scan_cuda", ("fwd", "bwd")),
    "causal_conv1d": ("causal_conv1d_cuda", ("causal_conv1d_fwd", "causal_conv1d_bwd", "causal_conv1d_update")),
}
# how janus_pretrain/model/kernels.py calls each: cuda_selective_scan and cuda_causal_conv1d
GLUE_CALLS = {
    "selective_scan_fn": (("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus"), {}),
    "causal_conv1d_fn": (("x", "weight", "bias"), {"activation": "silu"}),
}


def _cubin_arches(so: Path, cuobjdump: str) -> set[str]:
    listing = subprocess.run([cuobjdump, "--list-elf", str(so)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"sm_(\d+)", listing))


def check(wheels: list[Path], cuobjdump: str) -> list[str]:
    import torch

    from janus_pretrain.model.kernels import _CUDA_KERNELS

    failures = []
    if torch.cuda.is_available():
        failures.append("a GPU is visible: this check is meant for the CPU machine (CUDA_VISIBLE_DEVICES=)")
    site = Path(tempfile.mkdtemp(prefix="wheel-check-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), python {sys.version.split()[0]}, "
          f"GPU visible: {torch.cuda.is_available()}")
    for package, (extension, functions) in EXTENSIONS.items():
        if not (site / package).is_dir():
            print(f"{package}: no wheel given, not checked")
            continue
        for so in sorted(site.glob(f"{extension}*.so")):
            arches = _cubin_arches(so, cuobjdump)
            print(f"{so.name}: {so.stat().st_size / 2**20:.1f} MiB, device code for sm_{', sm_'.join(sorted(arches))}")
            if arches != {"90"}:
                failures.append(f"{so.name}: device code for sm_{sorted(arches)}, expected sm_90 only")
        try:
            module = importlib.import_module(extension)
        except Exception as exc:  # an undefined symbol of another torch, a missing libcudart...
            failures.append(f"{extension}: does not import against torch {torch.__version__}: {exc}")
            continue
        absent = [f for f in functions if not callable(getattr(module, f, None))]
        if absent:
            failures.append(f"{extension}: lacks {', '.join(absent)}")
        module_name, attrs = _CUDA_KERNELS[package]
        try:
            glue = importlib.import_module(module_name)
        except Exception as exc:
            failures.append(f"{module_name} (what model/kernels.py imports): {type(exc).__name__}: {exc}")
            continue
        for attr in attrs:
            fn = getattr(glue, attr, None)
            if fn is None:
                failures.append(f"{module_name}.{attr}: missing")
                continue
            args, kwargs = GLUE_CALLS[attr]
            try:
                inspect.signature(fn).bind(*args, **kwargs)
            except TypeError as exc:
                failures.append(f"{module_name}.{attr}{inspect.signature(fn)}: the glue's call does not bind: {exc}")
        print(f"{package}: {extension} imports, exports {', '.join(functions)}; {module_name}."
              f"{', '.join(attrs)} takes the glue's arguments")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheels", type=Path, nargs="+")
    ap.add_argument("--cuobjdump", default=os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump"))
    args = ap.parse_args()
    missing = [str(w) for w in args.wheels if not w.is_file()]
    if missing:
        print(f"error: no such wheel: {', '.join(missing)} (bash bench/gpu/build_wheels.sh builds them)", file=sys.stderr)
        return 2
    failures = check(args.wheels, args.cuobjdump)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    print("wheel check: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
