#!/usr/bin/env bash
# Fresh machine -> installed kit -> `paradis demo` end to end:
# trains a small ParaDiS network on Fashion-MNIST, converts it to int8
# partitions, serves it on four devices (three node daemons and an emulated
# serial board behind `paradis bridge`) and keeps serving on three when one
# is lost. Outputs: runs/demo/ (the README's pipeline runs on them).
# Arguments go to `paradis demo` (see `paradis demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  apt-get update
  apt-get install -y dataset-fashion-mnist
fi
python -m pip install -e ".[all]"
export TF_CPP_MIN_LOG_LEVEL=2
paradis demo "$@"
