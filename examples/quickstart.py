"""The README's quick start: a tiny TopoNet on Python's standard library, offline, on CPU (about a minute).

python examples/quickstart.py
"""

from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hf_topo import TopoConfig, TopoTrainer, TopoTrainingArguments
from hf_topo.data import load_text_datasets, pack_into_blocks, train_bpe_tokenizer, write_python_corpus

raw = load_text_datasets(train_file=write_python_corpus("outputs/quickstart/corpus.txt", max_bytes=500_000))
tokenizer = train_bpe_tokenizer(raw["train"]["text"], vocab_size=2048)
blocks = pack_into_blocks(raw, tokenizer, block_size=128)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_layer=4, n_embd=128, n_head=4))
args = TopoTrainingArguments(
    "outputs/quickstart/toponet", tau=5.0, max_steps=100, learning_rate=2e-3, use_cpu=True, report_to=[]
)
trainer = TopoTrainer(model=model, args=args, train_dataset=blocks["train"], processing_class=tokenizer)
trainer.train()
trainer.save_model()  # config.json gets the "topography" record

model = AutoModelForCausalLM.from_pretrained("outputs/quickstart/toponet")  # a plain GPT2LMHeadModel
print(TopoConfig.from_pretrained("outputs/quickstart/toponet").layers)  # every topographic layer and its sheet
