#!/usr/bin/env bash
# Lays out the pretrained openWakeWord models (provisioned by bootstrap.sh)
# as a model repository: REPO/<model>/1/model.onnx, and the `wakeword`
# pipeline that chains them (docs/pipelines.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="${1:?usage: make_sample_repo.sh REPO}"
for model in melspectrogram embedding_model hey_jarvis_v0.1 alexa_v0.1 silero_vad timer_v0.1 \
  weather_v0.1; do
  mkdir -p "$repo/$model/1"
  cp -u "$root/.deps/openwakeword/$model.onnx" "$repo/$model/1/model.onnx"
done
mkdir -p "$repo/wakeword"
cp -u "$root/scripts/sample-repo/wakeword/model.json" "$repo/wakeword/model.json"
