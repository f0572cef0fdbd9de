# Sourced by the scripts that fetch a private runtime from Debian's archive
# (docker-engine.sh, containerd2.sh): packages are downloaded with a private
# apt configuration and unpacked with dpkg-deb, nothing is installed.
#
# fetch_debs WORK SUITE PACKAGE...: downloads PACKAGE... of Debian's SUITE
# into WORK/SUITE/debs.
fetch_debs() {
  local work=$1 suite=$2
  shift 2
  local dir=$work/$suite
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$dir/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o APT::Sandbox::User=root
    -o Debug::NoLocking=1 -q)
  apt-get "${opts[@]}" update >&2
  (cd "$dir/debs" && apt-get "${opts[@]}" download "$@" >&2)
}

# unpack_debs WORK STAGING: unpacks every .deb under WORK into STAGING and
# records "package version" lines in STAGING/versions.
unpack_debs() {
  local work=$1 staging=$2
  mkdir -p "$staging"
  for deb in "$work"/*/debs/*.deb; do
    dpkg-deb -x "$deb" "$staging"
    dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >>"$staging/versions"
  done
}
