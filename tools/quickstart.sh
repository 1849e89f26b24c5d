#!/usr/bin/env bash
# Fresh machine -> installed kit -> `paradis demo` end to end:
# trains a small ParaDiS network on Fashion-MNIST, converts it to int8
# partitions, deploys them to four local node daemons, runs inference on
# every switch and survives the loss of a node.
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
