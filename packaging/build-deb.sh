#!/usr/bin/env bash
# make deb: a Debian package of the build in build/qworker, assembled with dpkg-deb from what
# `make install` puts in a staging tree. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$1
arch=$(dpkg --print-architecture)
stage=build/deb/root
deb=build/qworker_${version}-1_${arch}.deb

rm -rf build/deb
make --no-print-directory install DESTDIR="$PWD/$stage" PREFIX=/usr sysconfdir=/etc \
    unitdir=/lib/systemd/system docdir=/usr/share/doc/qworker >/dev/null
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/sbin/qworker"
gzip -9n "$stage"/usr/share/man/man*/*
install -d "$stage/usr/share/doc/qworker"
install -m 0644 packaging/debian/copyright "$stage/usr/share/doc/qworker/copyright"
gzip -9nc packaging/debian/changelog > "$stage/usr/share/doc/qworker/changelog.Debian.gz"

install -d "$stage/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "packaging/debian/$f" "$stage/DEBIAN/$f"; done
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/${version}-1/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    packaging/debian/control > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
