"""convolab: learn, build, train and inspect convolutional neural networks, on real data.

The public API::

    import convolab
    convolab.list_models()                       # registered architectures
    model = convolab.create_model("lenet5", num_classes=10, in_chans=1, input_size=28)
    data = convolab.load_dataset("fashion-mnist")  # uint8 splits in memory
    result = convolab.train(model="tutorial_cnn", data="fashion-mnist", epochs=5, out="runs/demo")
    run = convolab.load_run("runs/demo")         # model + preprocessing + class names
    run.predict("shoe.png", top_k=3)
"""

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_dataset", "train", "TrainConfig", "load_run", "Run", "__version__"]

try:
    from convolab.data import load_dataset  # noqa: E402
    from convolab.models import create_model, list_models  # noqa: E402
    from convolab.runs import Run, load_run  # noqa: E402
    from convolab.train import TrainConfig, train  # noqa: E402
except ModuleNotFoundError as _missing:
    # Without PyTorch only the NumPy engine works: `import convolab.glass` must not fail here. (Eager
    # imports, not a lazy module __getattr__: importing the subpackage convolab.train later would
    # rebind `convolab.train` from the function to the module.)
    if _missing.name not in ("torch", "torchvision"):
        raise
    _TORCH_MISSING = str(_missing)

    def __getattr__(name: str):
        if name in __all__:
            raise ModuleNotFoundError(f"convolab.{name} needs PyTorch ({_TORCH_MISSING}); without it only "
                                      "convolab.glass, the NumPy engine, works")
        raise AttributeError(f"module 'convolab' has no attribute {name!r}")
