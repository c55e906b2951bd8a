# syntax=docker/dockerfile:1.7
# effnet-dist GPU image: build stage (CUDA devel + LibTorch from the torch wheel) and a runtime
# stage with the binaries, effnet-run, OpenMPI and sshd (MPIJob workers). Build from the repo root:
#   docker build -f k8s/images/gpu.Dockerfile -t REGISTRY/effnet-dist:0.1.0-cu130 .
# (BuildKit reads k8s/images/gpu.Dockerfile.dockerignore as the context's ignore file.)
#
# Note [pins]: the CUDA base images are pinned by exact tag and torch by exact version (it must match
# the base's CUDA major, cu130). Ubuntu packages follow the pinned base's archive (24.04: gRPC 1.51,
# protobuf 3.21, HDF5 1.10, OpenMPI 4.1); the runtime stage installs exactly the packages that
# own the libraries the binaries link (listed by the build stage), and fails if any is missing.

ARG CUDA_VERSION=13.0.2
ARG UBUNTU=ubuntu24.04
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU} AS build
ARG TORCH_VERSION
ARG TORCH_INDEX
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008,SC2046
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libhdf5-dev libopenmpi-dev openmpi-bin \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libspdlog-dev libfmt-dev libopencv-imgcodecs-dev libopencv-imgproc-dev libpng-dev \
      libyaml-cpp-dev libcli11-dev nlohmann-json3-dev \
      python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# LibTorch comes from the torch wheel (stack-notes.md); the venv moves to the runtime stage at the
# same path, so the binaries' RPATH into it stays valid.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DEFFNET_BUILD_TESTS=OFF -DEFFNET_BUILD_BENCH=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
      -DPython3_EXECUTABLE=/opt/venv/bin/python \
    && cmake --build /build -j"$(nproc)" --target effnet-coordinator effnet-worker effnet-prepare \
      effnet-inspect effnet-probe \
    && mkdir -p /opt/effnet/bin \
    && cp /build/bin/effnet-coordinator /build/bin/effnet-worker /build/bin/effnet-prepare \
      /build/bin/effnet-inspect /build/bin/effnet-probe launch/effnet-run /opt/effnet/bin/ \
    && install -m 0755 k8s/images/effnet-k8s-launch /opt/effnet/bin/ \
    && ldd /opt/effnet/bin/effnet-* 2>/dev/null | awk '/=> \//{print $3}' | sort -u \
      | xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | sort -u >/opt/effnet/runtime-packages.txt

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /opt/effnet/runtime-packages.txt /tmp/runtime-packages.txt
# hadolint ignore=DL3008,SC2046
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openmpi-bin openssh-server openssh-client python3 ca-certificates \
      $(grep -v -E '^(cuda-|libcudnn|libnccl|libcublas|libcusparse|libcufft|libcurand|libnvjitlink)' /tmp/runtime-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/effnet /opt/effnet
# Workers are reached over ssh by the MPIJob launcher. mpi-operator mounts the job's key pair at
# /root/.ssh from a Secret (read-only), so host keys are not checked against a known_hosts file and
# sshd does not insist on the Secret's file modes.
RUN mkdir -p /run/sshd \
    && sed -i 's/^#\?\s*StrictModes .*/StrictModes no/' /etc/ssh/sshd_config \
    && printf 'Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n' \
      >>/etc/ssh/ssh_config \
    && useradd --uid 1000 --user-group --create-home effnet \
    && if ldd /opt/effnet/bin/effnet-* | grep 'not found'; then exit 1; fi
ENV PATH=/opt/effnet/bin:${PATH}
WORKDIR /runs
CMD ["effnet-coordinator", "--help"]
