#!/data/data/com.termux/files/usr/bin/sh
# Installs the Flumph device agent in Termux on an Android phone, as a termux-services service
# that Termux:Boot starts when the phone boots. Run it from a checkout of this repository:
#   pkg install git && git clone <this repository> flumph && sh flumph/deploy/termux/install.sh
# Run it again to upgrade: settings (~/.config/flumph) and data-usage counters
# (~/.local/state/flumph-agent) are kept. Not tried on a real phone: see deploy/termux/README.md.
set -eu

: "${PREFIX:?run this inside Termux (PREFIX is not set)}"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=$HOME/.local/share/flumph/venv
config_dir=$HOME/.config/flumph
service=$PREFIX/var/service/flumph-agent

say() { printf 'flumph install: %s\n' "$*"; }

# Native parts come from Termux's own packages (built for Android's libc): FFmpeg with SVT-AV1,
# x265 and MediaCodec; libsrt (loaded by flumph through ctypes); NumPy; OpenCV's Python module
# (in the x11 repository). termux-tools (always installed) provides termux-wake-lock.
say "installing Termux packages"
pkg install -y x11-repo
pkg install -y python python-pip ffmpeg libsrt termux-services python-numpy opencv-python
# Prebuilt when Termux has them; otherwise pip builds them below (with the build tools).
for optional in python-av python-pydantic-core; do
  pkg install -y "$optional" || say "no Termux package $optional: pip will build it"
done

# A virtualenv that sees the Termux packages above (--system-site-packages) and holds the rest.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python -m venv --system-site-packages "$venv"
fi
# The agent's requirements from pyproject.toml, less the ones Termux packages provide (OpenCV has
# no Android wheel and would be compiled from source for hours).
requirements=$("$venv/bin/python" -c "import tomllib, sys
project = tomllib.load(open(sys.argv[1], 'rb'))['project']
skip = ('opencv-python-headless', 'numpy')
wanted = project['dependencies'] + project['optional-dependencies']['agent']
print('\n'.join(r for r in wanted if not r.startswith(skip)))" "$repo/pyproject.toml")
say "installing Python packages: $(echo "$requirements" | tr '\n' ' ')"
# shellcheck disable=SC2086  # one requirement per word, none contains a space
if ! "$venv/bin/pip" install $requirements; then
  say "pip failed; installing build tools (clang, rust) and trying once more"
  pkg install -y clang make pkg-config rust binutils
  # shellcheck disable=SC2086
  "$venv/bin/pip" install $requirements
fi
"$venv/bin/pip" install --no-deps --upgrade "$repo"
"$venv/bin/flumph" --version

# Settings: the example, once; never overwritten.
mkdir -p "$config_dir"
if [ ! -f "$config_dir/agent.toml" ]; then
  cp "$repo/deploy/examples/agent.toml" "$config_dir/agent.toml"
  say "wrote $config_dir/agent.toml: set device_id, ingest, source and [agent.mqtt] in it"
fi

# The service, created stopped ("down") until the settings are edited.
mkdir -p "$service/log"
first_install=no
[ -f "$service/run" ] || first_install=yes
cp "$here/sv/flumph-agent/run" "$service/run"
cp "$here/sv/flumph-agent/log/run" "$service/log/run"
chmod 0755 "$service/run" "$service/log/run"
[ "$first_install" = no ] || touch "$service/down"

# Start on boot (needs the Termux:Boot app, opened once).
mkdir -p "$HOME/.termux/boot"
cp "$here/boot/flumph-agent" "$HOME/.termux/boot/flumph-agent"
chmod 0755 "$HOME/.termux/boot/flumph-agent"

termux-wake-lock || true
if [ "$first_install" = yes ]; then
  cat <<EOF
Installed. Next:
  1. edit $config_dir/agent.toml (device_id, ingest, source, [agent.mqtt]);
     put this device's MQTT password on the first line of $config_dir/mqtt-password
     (chmod 600 it), and try it in the foreground: $venv/bin/flumph agent --config $config_dir/agent.toml
  2. sv-enable flumph-agent        (starts it now and whenever termux-services starts)
  3. install and open Termux:Boot once, and exempt Termux from battery optimisation.
Logs: tail -f $PREFIX/var/log/sv/flumph-agent/current
EOF
else
  say "upgraded; restarting the service"
  sv restart flumph-agent || true
fi
