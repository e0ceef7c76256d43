"""fomoflux: continual multimodal pretraining of CLIP models (FoMo-in-Flux) as cached pipeline stages."""

__version__ = "0.1.0"
