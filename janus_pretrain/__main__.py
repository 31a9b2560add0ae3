"""`python -m janus_pretrain <verb> ...` is `janus <verb> ...` without installing (a fresh clone)."""
import sys

from janus_pretrain.commands import main

sys.exit(main())
