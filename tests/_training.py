"""Deterministic TopoTrainer runs shared by the trainer tests: plain SGD, no clipping, constant learning rate."""

from transformers import TrainingArguments

from hf_topo import TopoTrainingArguments


def training_args(out, cls: type[TrainingArguments] = TopoTrainingArguments, **overrides):
    settings = dict(
        output_dir=str(out),
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
        max_steps=3,
        learning_rate=0.5,
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if cls is TopoTrainingArguments:
        settings["tau"] = 5.0
    return cls(**(settings | overrides))


def weights(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}
