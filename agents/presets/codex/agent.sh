#!/bin/sh
# agent-vm's Codex preset entrypoint: codex-acp with its model provider pointed at the model
# relay (Codex reads no base URL from the environment). CODEX_MODEL, when set, picks the model.
set -eu
dir=$(dirname "$0")
: "${OPENAI_BASE_URL:?OPENAI_BASE_URL must be set (the model relay)}"
if [ -n "${CODEX_MODEL:-}" ]; then
  exec "$dir/codex-acp" -c "model_providers.agentvm.base_url=$OPENAI_BASE_URL" -c "model=$CODEX_MODEL" "$@"
fi
exec "$dir/codex-acp" -c "model_providers.agentvm.base_url=$OPENAI_BASE_URL" "$@"
