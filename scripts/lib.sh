# Shared by the bench scripts.

# evict drops a program's file from the page cache before it is measured. Linux maps an
# executable's text in whole page-cache folios, and how large those are depends on how the
# file was last read: after a sequential read (cp, cat, sha256sum) `relay version` shows
# 107 MiB of RSS, after a cold start 66 MiB, for the same binary and the same 14 MiB of its
# own memory. Evicting first measures every tool from the same state: a cold start, as in
# a fresh runner container.
evict() { # file...
  python3 - "$@" <<'PY'
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
