"""reinlite: Rein (CVPR 2024) for domain-generalized semantic segmentation, small and tested.

    from reinlite import Rein, build_backbone, build_model, load_model
    model = load_model("runs/mine")        # a trained run, ready for scripts (reinlite.Predictor)
    labels = model.predict(image)          # PIL / numpy / tensor -> class ids at the image's size
    rgb = model.overlay(image)             # the prediction in the run's class colours

The package's folders are its architecture:
    models/       the Rein layer, the frozen ViT it refines, the baselines, the Mask2Former head,
                  the losses, and the segmentor with its one builder
    engine/       the training step and loop, evaluation, optimiser and schedule, run checkpoints,
                  Rein's diagnostics
    data/         class tables, datasets in the real layouts, the augmentation, the benchmark
    weights/      outside weights loaded safely (and the shipped course backbones beside the code)
    config.py     the typed config: the one home of every default
    course/       notebook helpers, student feedback, notebook figures, the paper's numbers
    experiments/  research programs and measurements (pretraining, sweeps, probes, costs, GPU
                  check); nothing above imports them
"""
from reinlite.models.backbone import ReinBackbone, build_backbone, parameter_table
from reinlite.models.rein import Rein
from reinlite.engine.evaluate import Predictor, load_model, load_run
from reinlite.models.segmentor import build_model
from reinlite.viz import overlay
from reinlite.weights import CheckpointError, load_rein_checkpoint

__version__ = "0.1.0"
__all__ = ["Rein", "ReinBackbone", "build_backbone", "build_model", "load_model", "load_run",
           "Predictor", "overlay", "parameter_table",
           "load_rein_checkpoint", "CheckpointError", "__version__"]
