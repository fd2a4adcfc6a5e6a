#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test sampleattn: a C++20 compiler, CMake, make,
# GoogleTest, and Python 3 with venv/pip for the Python package's tests. Uses apt-get when run as root;
# otherwise says what is missing. The CUDA backend is built only where nvcc already exists.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ! -f /usr/include/gtest/gtest.h ] && [ ! -f /usr/local/include/gtest/gtest.h ]; then missing+=(libgtest-dev); fi
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv python3-pip)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_deps: missing ${missing[*]}; run as root or install them (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
