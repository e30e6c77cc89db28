"""Export trained models: encoder weights for PyTorch (safetensors), inference graphs (ONNX).

``python -m otcxr_jax.export --workdir <run> --format safetensors|onnx --out <file>``

* :mod:`~otcxr_jax.export.state_dict`: encoder variables under torchvision's ResNet and timm's
  ViT ``state_dict`` names and layouts, and back;
* :mod:`~otcxr_jax.export.safetensors_io`: those arrays in a safetensors file whose metadata
  rebuilds the JAX model (:func:`~otcxr_jax.export.safetensors_io.load`);
* :mod:`~otcxr_jax.export.onnx_resnet`: the ResNet inference model (pooled features, logits,
  sigmoid probabilities) as an ONNX graph;
* :mod:`~otcxr_jax.export.workdir`: the model of a pretraining or fine-tuning run's workdir.
"""
