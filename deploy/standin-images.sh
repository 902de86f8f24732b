#!/bin/sh
# Stand-ins for the Dockerfile's base images, for a sandbox that reaches no
# container registry (this project's: only the Go module proxy and Debian):
#   golang:1.26                               Debian's busybox (a shell for RUN) + this machine's /usr/local/go
#   gcr.io/distroless/static-debian12:nonroot passwd/group with nonroot (65532), CA certificates, /tmp; no shell
# They let `podman build -f deploy/Dockerfile` run every step of the real
# Dockerfile here; an image built on them is a test artefact, not a release.
#
#   apt-get install -y podman buildah runc busybox-static && sh deploy/standin-images.sh
set -eu
c=$(buildah from scratch); m=$(buildah mount "$c")
mkdir -p "$m/bin" "$m/usr/local" "$m/etc/ssl/certs" "$m/root" "$m/tmp" "$m/go" && chmod 1777 "$m/tmp"
cp /usr/bin/busybox "$m/bin/busybox"
for x in sh mkdir chown chmod ls cat env rm cp id; do ln -s busybox "$m/bin/$x"; done
cp -a /usr/local/go "$m/usr/local/go"
cp /etc/ssl/certs/ca-certificates.crt "$m/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$m/etc/passwd"; printf 'root:x:0:\n' > "$m/etc/group"
buildah umount "$c" >/dev/null
buildah config --env PATH=/go/bin:/usr/local/go/bin:/bin --env GOPATH=/go --env GOTOOLCHAIN=local --env HOME=/root --workingdir /go "$c"
buildah commit -q "$c" docker.io/library/golang:1.26 >/dev/null; buildah rm "$c" >/dev/null

c=$(buildah from scratch); m=$(buildah mount "$c")
mkdir -p "$m/etc/ssl/certs" "$m/tmp" "$m/home/nonroot" && chmod 1777 "$m/tmp" && chown 65532:65532 "$m/home/nonroot"
cp /etc/ssl/certs/ca-certificates.crt "$m/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$m/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$m/etc/group"
buildah umount "$c" >/dev/null
buildah config --user 65532 --workingdir /home/nonroot "$c"
buildah commit -q "$c" gcr.io/distroless/static-debian12:nonroot >/dev/null; buildah rm "$c" >/dev/null
podman images
