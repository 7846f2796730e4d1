#!/usr/bin/env bash
# Entry point for every build and test: restores the pinned Cake and runs build.cake.
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet tool restore >/dev/null && dotnet cake "$@"
