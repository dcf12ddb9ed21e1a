"""The diffusion core every method shares, one concept per module:

- `schedule`: the noise schedule (betas, abar) and the forward process;
- `prediction`: epsilon / x0 ("sample") / v prediction and the conversions between them;
- `conditioning`: conditions by channel concatenation or cross-attention context, classifier-free guidance with one
  scale per condition, condition dropout;
- `model`: a DiffusionModel (network + schedule + prediction type + conditions + x0 clipping) and its guided output;
- `samplers`: DDPM and DDIM chains over explicit (t, t_prev) pairs, partial or pure-noise start, inpainting, k samples
  as one batch with mean and SD;
- `training`: the denoising loss (optional ROI, source image, condition dropout);
- `latent`: the AutoencoderKL latent codec;
- `networks`: networks rebuilt from a checkpoint's JSON config.
"""
