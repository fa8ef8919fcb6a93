# Sourced by the .ci scripts: `apt_install PKG...` installs Debian packages, as root
# or through `sudo -n`, refreshing the package lists once if the first try fails.
apt_install() {
    local as_root=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "error: installing $* needs root or sudo" >&2; return 1; }
        as_root=(sudo -n)
    fi
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null \
        || { "${as_root[@]}" apt-get update -q >/dev/null \
            && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}
