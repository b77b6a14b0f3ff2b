#!/usr/bin/env bash
# Before the test command installs or runs anything: what it needs from outside Python.
if ! command -v chromium >/dev/null 2>&1; then
  echo "tests: the book's browser check needs Chromium on the PATH: 'sudo apt-get install chromium' (Debian/Ubuntu), then run this command again" >&2
  exit 2
fi
