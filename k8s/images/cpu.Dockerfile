# syntax=docker/dockerfile:1.7
# effnet-dist CPU image (debian:12-slim): for clusters without GPUs and for local tests (kind,
# minikube). Same layout as gpu.Dockerfile; LibTorch from the CPU torch wheel, no NCCL (the
# workers use the MPI backend). Build from the repo root:
#   docker build -f k8s/images/cpu.Dockerfile -t REGISTRY/effnet-dist:0.1.0-cpu .
# tests/k8s/image_build.sh builds it with buildah (ctest -L image) from a local build instead
# (--build-arg ARTIFACTS=prebuilt, Note [artifacts]).
#
# Note [pins]: debian:12.x-slim by exact point-release tag and torch by exact version; Debian
# packages follow that release (gRPC 1.51, protobuf 3.21, HDF5 1.10, OpenMPI 4.1, as on the
# development machines). The runtime stage installs exactly the packages that own the libraries
# the binaries load (k8s/images/effnet-image-stage, Note [merged /usr]), and fails if any is missing.
#
# Note [artifacts]: the runtime stage takes /stage (tools, the torch wheel's libraries,
# runtime-packages.txt; made by effnet-image-stage stage) from the stage named by ARTIFACTS:
# `build` compiles the project below; `prebuilt` copies the build context's stage/ folder, which
# effnet-image-stage stage filled from a build made elsewhere on Debian 12 (the image test does
# this rather than a half-hour compile). Unused stages are skipped (BuildKit, buildah).
#
# Note [non-root]: everything runs as user effnet (uid 1000), as in the mpi-operator examples: the
# workers' sshd listens on port 2222 with its own config and host key in /home/effnet (the
# MPIJob's sshAuthMountPath /home/effnet/.ssh), and ssh clients use port 2222.

ARG DEBIAN_TAG=12.12-slim
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ARTIFACTS=build

FROM debian:${DEBIAN_TAG} AS build
ARG TORCH_VERSION
ARG TORCH_INDEX
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libhdf5-dev libopenmpi-dev openmpi-bin \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libspdlog-dev libfmt-dev libopencv-imgcodecs-dev libopencv-imgproc-dev libpng-dev \
      libyaml-cpp-dev libcli11-dev nlohmann-json3-dev \
      python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY . .
# hadolint ignore=SC2046
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEFFNET_WITH_CUDA=OFF \
      -DEFFNET_BUILD_TESTS=OFF -DEFFNET_BUILD_BENCH=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
      -DPython3_EXECUTABLE=/opt/venv/bin/python \
    && cmake --build /build -j"$(nproc)" --target $(k8s/images/effnet-image-stage targets) \
    && k8s/images/effnet-image-stage stage --bin /build/bin --source /src --venv /opt/venv \
      --out /stage

FROM scratch AS prebuilt
COPY stage/ /stage/

# hadolint ignore=DL3006
FROM ${ARTIFACTS} AS artifacts

FROM debian:${DEBIAN_TAG} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=artifacts /stage/runtime-packages.txt /tmp/runtime-packages.txt
# hadolint ignore=DL3008,SC2046
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openmpi-bin openssh-server openssh-client python3 ca-certificates \
      $(cat /tmp/runtime-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=artifacts /stage/effnet-image-user /usr/local/sbin/effnet-image-user
RUN effnet-image-user
COPY --from=artifacts /stage/opt /opt
# The torch wheel's libraries through the loader's cache, after the system's (Note [artifacts]:
# binaries built elsewhere carry another RUNPATH); then every tool must load.
RUN find /opt/venv -name '*.so*' -printf '%h\n' | sort -u >/etc/ld.so.conf.d/zz-effnet-venv.conf \
    && ldconfig \
    && if ldd /opt/effnet/bin/effnet-* 2>/dev/null | grep 'not found'; then exit 1; fi
ENV PATH=/opt/effnet/bin:${PATH}
USER 1000:1000
WORKDIR /home/effnet
CMD ["effnet-coordinator", "--help"]
