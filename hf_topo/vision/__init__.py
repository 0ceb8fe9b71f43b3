"""Image classification with TopoNets: presets (:mod:`.models`) and the paper's ResNet-18/50 and ViT-B/32
(:mod:`.paper_models`), the authors' blur-pool ResNet (:mod:`.blurpool_resnet`, its config in
:mod:`.blurpool_resnet_config`), Truong & Hasson's CNN with an 11 × 11 ``fc1`` (:mod:`.truong_hasson_cnn`, its config
in :mod:`.truong_hasson_cnn_config`), ImageNet's labels and evaluation transform (:mod:`.imagenet`), image folders and
augmentation (:mod:`.data`, :mod:`.augmentation`), accuracy (:mod:`.metrics`), pretraining (:mod:`.training`), and
category stimuli and selectivity maps of saved models (:mod:`.stimuli`, :mod:`.category_report`); the
offline vision demo is :mod:`hf_topo.experiments.vision_demo`. ``hf-topo pretrain --train_dir DIR`` trains them with the same
:class:`~hf_topo.TopoTrainer` as the language models."""
