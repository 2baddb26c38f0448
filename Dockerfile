# The filter as a container image, for those who build images with Docker instead of
# `make oci` (which needs no Docker: deploy/oci_image.py, see docs/DEPLOY.md). One layer with
# /plugin.wasm: the Wasm image spec's *compat* variant that Istio and Envoy Gateway read.
# When the image gets OCI media types (BuildKit's default for pushes), the spec also wants the
# manifest annotation module.wasm.image/variant=compat:
#   cp Dockerfile dist/ && docker buildx build --annotation "manifest:module.wasm.image/variant=compat" \
#     -t REGISTRY/aigate:TAG --push dist
FROM scratch
COPY plugin.wasm ./
