# A preset agent (Claude, Codex, Gemini) on top of the agent image, built offline by
#   agent-vm image build --agents claude,codex,gemini
# The context holds files/ (baked files such as /etc/claude-code/managed-settings.json, at their
# image paths) and the preset's npm install staged on the host from pinned versions
# (agents/presets/versions.json) under PRESET_SOURCE. Nothing is downloaded here.
ARG BASE_IMAGE=agent-vm/agent:latest
FROM ${BASE_IMAGE}

ARG PRESET_DIR
ARG PRESET_SOURCE=preset
ARG PRESET_CHECK=true

# Owned by root and read-only to the sandbox user: the agent cannot change its own program or
# its managed settings (the root filesystem is read-only at run time anyway).
COPY files/ /
COPY ${PRESET_SOURCE}/ ${PRESET_DIR}/

# Prove the agent starts, as the sandbox user, without leaving anything in /workspace (its
# content would be copied into every new workspace volume).
RUN set -eu; \
    export HOME="$(mktemp -d)"; \
    sh -c "$PRESET_CHECK"; \
    rm -rf "$HOME"
