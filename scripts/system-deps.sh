#!/bin/sh
# The system packages qeffbuild's tests and data scripts use (Debian/Ubuntu): espeak-ng and sox speak
# and resample the generated evaluation set (scripts/make_eval_set.py); chromium renders the HTML
# report in its test. Installs only what is missing; a no-op when all are there.
set -e
missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v sox >/dev/null 2>&1 || missing="$missing sox"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "qeffbuild needs:$missing (no apt-get here: install them with your package manager)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing:$missing" >&2
# another apt (unattended upgrades, a second install) may hold the dpkg lock: wait for it rather than fail
lock="-o DPkg::Lock::Timeout=900"
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get $lock update -qq
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get $lock install -y -qq --no-install-recommends $missing >/dev/null
