# syntax=docker/dockerfile:1.7
# effnet-dist GPU image: build stage (CUDA devel + LibTorch from the torch wheel) and a runtime
# stage with the tools, effnet-run, OpenMPI and sshd (MPIJob workers). Build from the repo root:
#   docker build -f k8s/images/gpu.Dockerfile -t REGISTRY/effnet-dist:0.1.0-cu130 .
# (BuildKit reads k8s/images/gpu.Dockerfile.dockerignore as the context's ignore file.)
#
# Note [pins]: the CUDA build image is pinned by exact tag and torch by exact version (it must
# match the build image's CUDA major, cu130). Ubuntu packages follow the pinned release's archive
# (24.04: gRPC 1.51, protobuf 3.21, HDF5 1.10, OpenMPI 4.1); the runtime stage installs exactly
# the packages that own the libraries the binaries load (k8s/images/effnet-image-stage, Note
# [merged /usr]), and fails if any tool cannot load.
#
# Note [CUDA once]: the runtime stage is plain ubuntu:24.04, not a CUDA image: the CUDA user-space
# libraries (cudart, cuBLAS, cuFFT, cuRAND, cuSPARSE, cuDNN, NCCL, nvJitLink...) come once, from the
# torch wheel's nvidia-* packages under /opt/venv (a CUDA runtime base would ship them a second
# time, about 3 GB). The build's libcudart.so.13 and libnccl.so.2 from the CUDA toolkit are found as
# the wheel's copies (Note [provided libraries] in effnet-image-stage). The driver is not in the
# image: the NVIDIA container toolkit (GPU Operator or device plugin) mounts the node's libcuda and
# nvidia-smi when NVIDIA_VISIBLE_DEVICES is set. Nodes need NVIDIA driver 580 or newer (CUDA 13.0,
# which cu130 wheels need; NVIDIA_REQUIRE_CUDA makes the toolkit refuse an older driver at start).
#
# Note [artifacts] and Note [non-root]: as in cpu.Dockerfile.

ARG CUDA_VERSION=13.0.2
ARG UBUNTU=ubuntu24.04
ARG UBUNTU_TAG=24.04
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
ARG ARTIFACTS=build

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU} AS build
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
# LibTorch comes from the torch wheel (stack-notes.md); its libraries (and the nvidia-* wheels'
# CUDA libraries) move to the runtime stage at the same path under /opt/venv.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY . .
# hadolint ignore=SC2046
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
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

FROM ubuntu:${UBUNTU_TAG} AS runtime
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
# The wheel's CUDA and torch libraries through the loader's cache (Note [CUDA once]); then every
# tool must load.
RUN find /opt/venv -name '*.so*' -printf '%h\n' | sort -u >/etc/ld.so.conf.d/zz-effnet-venv.conf \
    && ldconfig \
    && if ldd /opt/effnet/bin/effnet-* 2>/dev/null | grep 'not found'; then exit 1; fi
# What the NVIDIA container toolkit reads (the CUDA images set the same).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"
ENV PATH=/opt/effnet/bin:${PATH}
USER 1000:1000
WORKDIR /home/effnet
CMD ["effnet-coordinator", "--help"]
