# Sourced by bench/gpu/build_wheels.sh and bench/gpu/torch211_venv.sh: sets PY312 to a CPython 3.12
# (the device image's), PYTHON312 if given, or exits 2. A pyenv shim may exist and still fail, so
# each candidate is run, not just looked up.
is_py312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }
PY312=${PYTHON312:-}
if [[ -z $PY312 ]]; then
  for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    is_py312 "$candidate" && { PY312=$candidate; break; }
  done
fi
if [[ -z $PY312 ]] || ! is_py312 "$PY312"; then
  echo "error: no CPython 3.12 (the device's) found; set PYTHON312 to one" >&2
  exit 2
fi
