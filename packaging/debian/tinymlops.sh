#!/bin/sh
# /usr/bin/tinymlops: start the bundled Tiny-MLOps operator installed under /opt/tinymlops.
exec /opt/tinymlops/tinymlops "$@"
