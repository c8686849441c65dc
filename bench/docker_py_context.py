#!/usr/bin/env python3
"""What ZenML runs to make a build context (docker-py 7): exclude_paths with
the .dockerignore patterns, create_archive with gzip, then sha1 over the
archive. Used by context_pack.sh as the reference to beat.

    python3 docker_py_context.py ROOT
"""
import hashlib
import os
import sys

from docker.utils import build as docker_build

root = os.path.abspath(sys.argv[1])
patterns = []
ignore = os.path.join(root, ".dockerignore")
if os.path.exists(ignore):
    with open(ignore) as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
files = sorted(docker_build.exclude_paths(root, patterns, dockerfile="Dockerfile"))
archive = docker_build.create_archive(root=root, files=files, gzip=True)
digest = hashlib.sha1()
archive.seek(0)
for block in iter(lambda: archive.read(1 << 20), b""):
    digest.update(block)
print(digest.hexdigest(), len(files))
