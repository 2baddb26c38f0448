# The filter as an OCI image, the format Istio's WasmPlugin and Envoy Gateway pull
# (`make oci` builds it from dist/; see docs/DEPLOY.md). The image holds one file.
FROM scratch
COPY plugin.wasm ./
