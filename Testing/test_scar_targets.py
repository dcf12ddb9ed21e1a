"""Tissue-specific gamma-corrected targets (paper 002, section 2.1)."""

import numpy as np

from CMRSynthesisLib import phantom
from CMRSynthesisLib.methods.scar_enhancement import (
    BLOOD_GAMMA_RANGE,
    SCAR_GAMMA_RANGE,
    enhancement_target,
    gamma_target,
)
from CMRSynthesisLib.metrics import cnr


def tissues(scar_value=0.5, blood_value=0.6):
    image = np.full((20, 20), 0.1, dtype=np.float32)
    scar = np.zeros_like(image, dtype=bool)
    blood = np.zeros_like(scar)
    scar[2:5, 2:8] = True
    blood[10:16, 10:16] = True
    image[scar], image[blood] = scar_value, blood_value
    image[scar] += np.linspace(-0.05, 0.05, scar.sum())
    return image, scar, blood


def test_scar_is_brightened_beyond_blood_and_nothing_else_changes():
    image, scar, blood = tissues(scar_value=0.5, blood_value=0.6)
    target, gammas = gamma_target(image, scar, blood, blood_reference=0.7)
    assert gammas.scar > 1 and gammas.blood == 1.0
    assert np.allclose(target[scar], image[scar] ** (1 / gammas.scar))
    assert target[scar].mean() > target[blood].mean() > 0
    untouched = ~(scar | blood)
    assert np.array_equal(target[untouched], image[untouched])
    assert np.array_equal(target[blood], image[blood])


def test_poorer_scar_to_blood_contrast_gets_a_stronger_gamma():
    weak = gamma_target(*tissues(scar_value=0.3, blood_value=0.6), blood_reference=0.7)[1]
    strong = gamma_target(*tissues(scar_value=0.3, blood_value=0.2), blood_reference=0.7)[1]
    assert weak.scar > strong.scar >= SCAR_GAMMA_RANGE[0]


def test_blood_brighter_than_reference_is_darkened_to_it():
    image, scar, blood = tissues(scar_value=0.5, blood_value=0.7)
    target, gammas = gamma_target(image, scar, blood, blood_reference=0.6)
    assert gammas.blood < 1
    assert abs(target[blood].mean() - 0.6) < 1e-4
    image, scar, blood = tissues(scar_value=0.5, blood_value=0.9)  # far above: the gamma stops at its bound
    target, gammas = gamma_target(image, scar, blood, blood_reference=0.3)
    assert gammas.blood == BLOOD_GAMMA_RANGE[0] and np.allclose(target[blood], 0.9**2)


def test_target_on_a_phantom_slice_raises_scar_contrast_in_input_units():
    study = phantom.lge_study(next(i for i in phantom.subject_ids("test", 20) if phantom.make_subject(i).scar))
    masks = study["masks"]
    z = int(np.argmax(masks["scar"].reshape(len(masks["scar"]), -1).sum(1)))
    image = study["lge"].array[z].astype(np.float32)
    m = {name: masks[name][z] for name in ("scar", "myocardium", "blood", "heart_roi")}
    target, _ = enhancement_target(image, m["scar"], m["blood"], m["heart_roi"], 64, 4, blood_reference=0.6)
    assert np.array_equal(target[~(m["scar"] | m["blood"])], image[~(m["scar"] | m["blood"])])
    assert cnr(target, m["scar"], m["myocardium"]) > 1.2 * cnr(image, m["scar"], m["myocardium"])
    assert cnr(target, m["scar"], m["blood"]) > cnr(image, m["scar"], m["blood"])
