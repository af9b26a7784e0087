# shellcheck shell=bash
# Shared by the bench scripts.

# median of the numbers on stdin, one per line, to two places; nothing for no input, so a
# missing peer's figure stays empty.
median() { sort -n | awk '{a[NR]=$1} END { if (NR) printf "%.2f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }

# evict drops a program's file from the page cache before it is measured. Linux maps an
# executable's text in whole page-cache folios, and how large those are depends on how the
# file was last read: after a sequential read (cp, cat, sha256sum) `relay version` shows
# 107 MiB of RSS, after a cold start 66 MiB, for the same binary and the same 14 MiB of its
# own memory. Evicting first measures every tool from the same state.
evict() { # file...
  python3 - "$@" <<'PY'
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

# warm puts a program's text in the page cache the way a cold start does: evict its file,
# then start it once (its version command). The measured run that follows is warm, as every
# run after the first in a runner is, and its RSS is the same as a cold start's.
warm() { # program
  local p; p=$(command -v "$1")
  evict "$p"
  "$p" version >/dev/null 2>&1 || "$p" --version >/dev/null 2>&1 || true
}
