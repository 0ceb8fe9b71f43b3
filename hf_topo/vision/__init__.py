"""Image classification with TopoNets: presets (:mod:`.models`), image folders and augmentation (:mod:`.data`),
accuracy (:mod:`.metrics`) and the offline vision demo (:mod:`.demo`). ``hf-topo pretrain --train_dir DIR`` trains
them with the same :class:`~hf_topo.TopoTrainer` as the language models."""
