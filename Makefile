# Two commands for a fresh machine: `make demo` and `make test`. Each creates (or reuses) .venv and installs
# everything into it: torch first from its CPU wheel, then the project with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmrsynthesis-installed
DEMO_OUT ?= demo_output

.PHONY: demo test lint install checkpoints clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cmrsynth demo --out $(DEMO_OUT)
	$(VENV)/bin/cmrsynth evaluate t1_from_cine --out-dir $(DEMO_OUT)/t1_from_cine --split test,ood --subjects 1 \
		--samples 2 --sampler ddim --ddim-steps 50

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q Testing

lint: $(STAMP)
	$(VENV)/bin/ruff check CMRSynthesis CMRSynthesisLib training Testing benchmarks

# Re-train the shipped demo checkpoints (2-core CPU: segmenter about 5 minutes, enhancer about 40, cine segmenter
# about 20, the three T1-from-cine models about 2 minutes each on a GPU (hours on this CPU) after rendering 120
# subjects (about 25 minutes here; the *_demo.json configs are the earlier CPU budget), the virtual-LGE
# autoencoder about 17 and its five models 20-60 each after 14 minutes of rendering, the multi-sequence autoencoder
# about 20 and its three models 13-45 each after 3 minutes of rendering) and refresh the manifest.
checkpoints: $(STAMP)
	$(PY) -m training scar_enhancement_segmenter --config training/configs/scar_segmenter_demo.json --out Resources/checkpoints/scar_enhancement_segmenter
	$(PY) -m training scar_enhancement --config training/configs/scar_enhancement_demo.json --out Resources/checkpoints/scar_enhancement
	$(PY) -m training cine_segmentation --config training/configs/cine_segmenter_demo.json --out Resources/checkpoints/cine_segmenter
	$(PY) -m training t1_from_cine --config training/configs/t1_from_cine_gpu.json --out Resources/checkpoints/t1_from_cine --seed 0
	$(PY) -m training t1_from_cine_raw_ddpm --config training/configs/t1_from_cine_raw_ddpm_gpu.json --out Resources/checkpoints/t1_from_cine_raw_ddpm --seed 0
	$(PY) -m training t1_from_cine_pix2pix --config training/configs/t1_from_cine_pix2pix_gpu.json --out Resources/checkpoints/t1_from_cine_pix2pix --seed 0
	$(PY) -m training virtual_lge_autoencoder --config training/configs/virtual_lge_autoencoder_demo.json --out Resources/checkpoints/virtual_lge_autoencoder
	$(PY) -m training virtual_lge --config training/configs/virtual_lge_demo.json --out Resources/checkpoints/virtual_lge
	$(PY) -m training virtual_lge --config training/configs/virtual_lge_no_kinematics_demo.json --out Resources/checkpoints/virtual_lge_no_kinematics
	$(PY) -m training virtual_lge --config training/configs/virtual_lge_no_relaxation_demo.json --out Resources/checkpoints/virtual_lge_no_relaxation
	$(PY) -m training virtual_lge --config training/configs/virtual_lge_pure_data_driven_demo.json --out Resources/checkpoints/virtual_lge_pure_data_driven
	$(PY) -m training virtual_lge_pix2pix --config training/configs/virtual_lge_pix2pix_demo.json --out Resources/checkpoints/virtual_lge_pix2pix
	$(PY) -m training multi_sequence_autoencoder --config training/configs/multi_sequence_autoencoder_demo.json --out Resources/checkpoints/multi_sequence_autoencoder
	$(PY) -m training multi_sequence --config training/configs/multi_sequence_demo.json --out Resources/checkpoints/multi_sequence
	$(PY) -m training multi_sequence --config training/configs/multi_sequence_no_heatmap_demo.json --out Resources/checkpoints/multi_sequence_no_heatmap
	$(PY) -m training multi_sequence_pix2pix --config training/configs/multi_sequence_pix2pix_demo.json --out Resources/checkpoints/multi_sequence_pix2pix
	$(PY) -m training manifest Resources/checkpoints

clean:
	rm -rf $(VENV) $(DEMO_OUT)
