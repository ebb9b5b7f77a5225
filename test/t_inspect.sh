# t_inspect.sh - "kt inspect" on the fixtures (test/fixtures/README): text,
# --json, --image-size, kt checkpoint metadata, and its errors.
. test/lib.sh
F=test/fixtures

expect_exit 0 "inspect narrow50 (text)" $KT inspect $F/narrow50.safetensors
T=$OUT/inspect_narrow50.txt
cp "$OUT/last.out" "$T"
expect_grep '^format  *torchvision (safetensors, 320 tensors)' "$T" "text: format and container"
expect_grep '^variant  *resnet-custom: bottleneck blocks 3-4-6-3, widths 2-4-4-8, 32 features' "$T" "text: variant, depths, widths"
expect_grep 'stride on the 3x3 conv (ResNet v1.5, torchvision), batch norm eps 1e-05, conv biases no' "$T" "text: stride, eps, biases"
expect_grep '^classes  *5 ' "$T" "text: 5 classes"
expect_grep '^input  *RGB pixels /255, minus mean \[0.485, 0.456, 0.406\], divided by std \[0.229, 0.224, 0.225\]' "$T" "text: torchvision preprocessing"
expect_grep 'resize shorter side to 256, center crop 224' "$T" "text: default geometry"
expect_grep '^blas  *[A-Za-z0-9]' "$T" "text: BLAS kernel shown"
expect_grep '^  layer3.5  *16x14x14  *layer3 res4f conv4_block6_out$' "$T" "text: layer3.5 at 224 with its aliases"
expect_grep '^  stem  *4x56x56$' "$T" "text: stem shape"
expect_grep '^  logits  *5$' "$T" "text: logits point"
n=$(grep -c '^  [a-z]' "$T")
if [ "$n" -eq 20 ]; then ok "text: 20 cut points"; else bad "text: $n cut points, want 20"; fi
if grep -q '^kt metadata' "$T"; then bad "text: no kt metadata for a torchvision file"; else ok "text: no kt metadata section"; fi
# The parameter count is the sum of the file's learnable tensors (t_arch checks
# the arithmetic); here the text must agree with the JSON.
p_text=$(sed -n 's/^parameters  *\([0-9,]*\) .*/\1/p' "$T" | tr -d ,)

expect_exit 0 "inspect narrow50 --json" $KT inspect --json $F/narrow50.safetensors
J=$OUT/inspect_narrow50.json
cp "$OUT/last.out" "$J"
p_json=$(sed -n 's/.*"parameters":\([0-9]*\).*/\1/p' "$J")
if [ -n "$p_text" ] && [ "$p_text" = "$p_json" ]; then ok "text and JSON give the same parameter count ($p_json)"; else bad "parameters: text '$p_text', json '$p_json'"; fi
n=$(wc -l <"$J")
if [ "$n" -eq 1 ]; then ok "json: one line on stdout"; else bad "json: $n lines"; fi
expect_grep '"format":"torchvision","container":"safetensors"' "$J" "json: format"
expect_grep '"depths":\[3,4,6,3\],"widths":\[2,4,4,8\]' "$J" "json: depths and widths"
expect_grep '"stride_on_3x3":true,"bn_eps":1e-05,"conv_bias":false' "$J" "json: stride, eps, bias"
expect_grep '"num_classes":5' "$J" "json: classes"
expect_grep '"channel_order":"RGB","scale":0.003921569,"mean":\[0.485,0.456,0.406\],"std":\[0.229,0.224,0.225\],"resize":256,"crop":224' "$J" "json: preprocessing"
expect_grep '{"name":"layer3.5","index":14,"shape":\[16,14,14\],"aliases":\["layer3","res4f","conv4_block6_out"\]}' "$J" "json: cut point with shape and aliases"
expect_grep '{"name":"logits","index":19,"shape":\[5\],"aliases":\[\]}' "$J" "json: logits point"
expect_grep '"kt_metadata":null' "$J" "json: kt_metadata null"
expect_grep '"blas":{"core":"[A-Za-z0-9]' "$J" "json: BLAS core"
if command -v python3 >/dev/null 2>&1; then
    if python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$J" 2>"$OUT/json.err"; then
        ok "json: parses as JSON"
    else
        bad "json: does not parse: $(cat "$OUT/json.err")"
    fi
fi

expect_exit 0 "inspect narrow50_keras --json --image-size 45" $KT inspect --json --image-size 45 $F/narrow50_keras
J=$OUT/inspect_keras.json
cp "$OUT/last.out" "$J"
expect_grep '"format":"keras","container":"tfjs","tensors":320' "$J" "keras json: format"
expect_grep '"stride_on_3x3":false,"bn_eps":0.001,"conv_bias":true' "$J" "keras json: v1, eps 1e-3, biases"
expect_grep '"channel_order":"BGR","scale":1,"mean":\[103.939,116.779,123.68\],"std":\[1,1,1\]' "$J" "keras json: caffe preprocessing"
expect_grep '"image_size":45' "$J" "keras json: image size"
expect_grep '{"name":"layer3.2","index":11,"shape":\[16,3,3\]' "$J" "keras json: shapes at 45"
expect_grep '{"name":"stem","index":1,"shape":\[4,12,12\]' "$J" "keras json: stem at 45"

expect_exit 0 "inspect model.json path (text)" $KT inspect $F/narrow50_keras/model.json
expect_grep '^format  *keras (TF.js layers model, 320 tensors)' "$OUT/last.out" "keras text: format"
expect_grep 'stride on the first 1x1 conv (ResNet v1, Caffe/Keras), batch norm eps 0.001, conv biases yes' "$OUT/last.out" "keras text: v1"
expect_grep '^input  *BGR pixels x1, minus mean \[103.939, 116.779, 123.68\]' "$OUT/last.out" "keras text: BGR"

expect_exit 0 "inspect kt checkpoint (text)" $KT inspect $F/kt_keras.safetensors
T=$OUT/inspect_kt.txt
cp "$OUT/last.out" "$T"
expect_grep '^format  *kt (safetensors' "$T" "kt: format kt"
expect_grep '^classes  *none' "$T" "kt: custom head, no plain classifier"
expect_grep '^kt metadata:' "$T" "kt: metadata section"
expect_grep '^  classes  *2 items: ants, bees$' "$T" "kt: class names"
expect_grep '^  epoch  *3$' "$T" "kt: epoch"
expect_grep 'batch norm eps 0.001' "$T" "kt: eps from metadata"
if grep -q '^  logits' "$T"; then bad "kt: no logits point without a plain fc"; else ok "kt: no logits point"; fi
expect_exit 0 "inspect kt checkpoint --json" $KT inspect --json $F/kt_keras.safetensors
expect_grep '"kt_metadata":{"version":1,"classes":\["ants","bees"\],"epoch":3,"arch":{' "$OUT/last.out" "kt json: metadata object"
expect_grep '"num_classes":0' "$OUT/last.out" "kt json: num_classes 0"

expect_exit 0 "inspect basic18" $KT inspect $F/basic18.safetensors
expect_grep 'basic blocks 2-2-2-2, widths 8-8-16-16, 16 features' "$OUT/last.out" "basic18: basic blocks"

# Errors: status 1 for bad files (message names the file and tensor), 2 for
# usage; nothing on stdout either way.
expect_exit 1 "bad file exits 1" $KT inspect $F/bad/nan.safetensors
expect_grep "kt: error: .*bad/nan.safetensors.*layer2.0.bn2.weight.*NaN" "$OUT/last.err" "bad file: message names file and tensor"
if [ -s "$OUT/last.out" ]; then bad "bad file: stdout not empty"; else ok "bad file: stdout empty"; fi
expect_exit 1 "missing tensor exits 1" $KT inspect --json $F/bad/missing.safetensors
expect_grep "missing tensor 'layer3.0.bn2.running_mean'" "$OUT/last.err" "missing tensor named"
if [ -s "$OUT/last.out" ]; then bad "missing tensor --json: stdout not empty"; else ok "missing tensor --json: stdout empty"; fi
expect_exit 1 "missing shard exits 1" $KT inspect $F/bad/keras_noshard
expect_grep "group1-shard2of2.bin" "$OUT/last.err" "missing shard named"
expect_exit 1 "absent file exits 1" $KT inspect $OUT/no_such_model.safetensors
expect_grep "no_such_model.safetensors" "$OUT/last.err" "absent file named"
expect_exit 2 "no model is a usage error" $KT inspect
expect_exit 2 "two models is a usage error" $KT inspect $F/tiny.safetensors $F/tiny.safetensors
expect_exit 2 "--image-size 5 is out of range" $KT inspect --image-size 5 $F/tiny.safetensors
expect_grep "image-size" "$OUT/last.err" "range error names the option"
expect_exit 2 "unknown option" $KT inspect --bogus $F/tiny.safetensors
expect_exit 0 "inspect --help" $KT inspect --help
expect_grep "image-size" "$OUT/last.out" "help lists --image-size"
finish
