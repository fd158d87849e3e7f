#!/usr/bin/env bash
# The default job end to end on a fresh machine: install what the build needs, build the CPU
# trainer, prepare Tiny Shakespeare (GPT-2 tokens), train the tiny Mamba-2 config into runs/quickstart
# (main.log, the final model and its tokenizer), print a sample and the commands that use the model.
#   bash scripts/quickstart.sh [path/to/input.txt] [extra train_ssd flags...]
# Without a path it uses ../shared/data/tinyshakespeare/input.txt, or downloads the text. Run again,
# it resumes runs/quickstart (-y 1): a finished run is evaluated and sampled again, not retrained;
# delete runs/quickstart to train from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/include/cjson/cJSON.h ] || [ ! -f /usr/include/zstd.h ] || ! command -v zstd > /dev/null; then
    echo "installing libcjson-dev, libzstd-dev, zstd (apt-get)"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq libcjson-dev libzstd-dev zstd > /dev/null
fi
python3 -c "import numpy, tokenizers" 2> /dev/null || python3 -m pip install -q -r scripts/requirements.txt
make train_ssd

input="${1:-../shared/data/tinyshakespeare/input.txt}"
[ $# -gt 0 ] && shift
if [ ! -f "$input" ]; then
    input=datasets/tinyshakespeare_input.txt
    mkdir -p datasets
    [ -f "$input" ] || python3 -c "import urllib.request, sys; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
        https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt "$input"
fi
python3 scripts/prepro.py --recipe tinyshakespeare --tokenizer gpt2 --input "$input"
./train_ssd -e configs/mamba2-tiny.json -b 4 -t 128 -x 150 -l 3e-3 -u 10 -q 0.1 -v 50 -m 10 -g 96 -sk 40 \
    -o runs/quickstart -y 1 "$@"
model=$(ls runs/quickstart/model_*.bin | tail -n 1)
cat << EOF

The model is saved in $model (with main.log and tokenizer.bin beside it). Next:
  # another sample (-R 2 for another seed)
  ./train_ssd -e $model -x 0 -v 0 -g 200 -sk 40
  # continue a prompt of your own
  python3 scripts/generate.py --model $model --prompt "ROMEO:" --tokens 200
  # the loss curves -> runs/quickstart/loss.png
  python3 scripts/plot.py runs/quickstart
  # train it further: a new run from its weights
  ./train_ssd -e $model -o runs/more -x 150 -l 1e-3
EOF
