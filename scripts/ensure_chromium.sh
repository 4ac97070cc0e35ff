#!/usr/bin/env bash
# Make Debian's chromium available for the browser test of the report (tests/report/test_browser.py).
#
# Installs the `chromium` apt package when it is missing and we are root on a machine with apt-get.
# Never fails: where chromium cannot be installed it says why and exits 0, and the browser test skips
# with that reason. Playwright is told not to download browsers of its own: the test launches
# /usr/bin/chromium through executable_path.
set -u

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_chromium: chromium is not installed and this is not root; install it with" \
       "'sudo apt-get install chromium' to run the report's browser test (it is skipped meanwhile)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: chromium is not installed and apt-get is not available; install a chromium" \
       "binary at /usr/bin/chromium to run the report's browser test (it is skipped meanwhile)"
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium package for the report's browser test"
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then
  echo "ensure_chromium: apt-get could not install chromium; the report's browser test is skipped"
fi
exit 0
