"""Sentence log-probabilities, lm-evaluation-harness's way, with every shared token prefix computed once.

A sentence's score is the sum of its tokens' log-probabilities for the text ``" " + sentence``, tokenized without
special tokens and conditioned on one prefix token (BOS, else EOS). Every sequence therefore starts with the same
token, and the sequences of a BLiMP paradigm share much more than that: the two sentences of a minimal pair agree up
to the word that differs, and many pairs open with the same words. :class:`SentenceScorer` runs each distinct token
prefix once:

| step | what | why |
|---|---|---|
| trie | the distinct sequences form a prefix tree; node = (prefix, token), depth = position | a shared prefix is one node path |
| rows | nodes in pre-order, cut into rows of ``row_tokens``; a row repeats the ancestors of its first node | a node sees its whole context |
| mask | node *i* attends to node *j* iff *j* is *i* or one of its ancestors; ``position_ids`` = depth | exactly each sentence's causal context |
| score | ``log p(node) = logits[parent, token] - logsumexp(logits[parent])``; sentence = sum along its path, float64 | a shared node adds the same number to every sentence through it |

The LM head (hidden size × vocabulary, about a third of a GPT-2-124M forward) runs only where a next-token
distribution is read: at each node that is the parent of a node its row scores. The leaves (every sentence's last
token), the ancestors a row repeats for context (all but the last) and the padding go through the transformer
blocks but not through the head: :func:`split_lm_head` gives the base model and the output layer, and the head and
log-softmax run on the gathered hidden states. :meth:`SentenceScorer.score` scores every node, so its sentence scores
are whole sums; :meth:`SentenceScorer.score_pairs` (what :func:`hf_topo.blimp.evaluate_blimp` uses) scores each
minimal pair from the first token where its two sequences differ: the tokens before it add the same to both scores,
so the head skips the nodes that lie only on shared parts of pairs. A model whose logits are more than its output
layer (e.g. soft-capped) is detected on its first sequences and gets its full logits.

A row packs many sentences without padding between them (the tree mask keeps them apart), so the only padding is at
the end of a forward's last rows. On the six-paradigm sample this computes 59 % of the tokens that scoring every
sentence on its own would. The per-token log-probabilities are those of a separate forward up to float32 rounding
(different matrix shapes); :func:`hf_topo.blimp.evaluate_blimp` rescores the rare pairs whose two scores come within
``tie_tolerance`` of each other without sharing, the way the harness does.

A model must accept a 4-D boolean ``attention_mask`` and ``position_ids`` (transformers' GPT-2, Llama, GPT-NeoX,
... do). The scorer checks this on the first two sequences against an unshared forward and falls back to
length-sorted, right-padded batches (``share_prefixes=False``) with a warning when they disagree.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..loading import check_tokenizer, tokenizer_display_name

__all__ = ["SentenceScorer", "PrefixTrie", "encode_sentences", "split_lm_head"]

logger = logging.getLogger(__name__)

#: Largest |shared - unshared| score difference (nats) that the self-check of the tree forward accepts.
_SELF_CHECK_TOLERANCE = 1e-3
#: Largest |model logits - head(base hidden)| / max(1, max |logit|) that keeps the split LM head.
_SPLIT_HEAD_TOLERANCE = 1e-3


def split_lm_head(model) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The base model (hidden states) and the output layer of a transformers causal LM, or ``None``.

    ``model(...).logits`` is ``head(base(...).last_hidden_state)`` for GPT-2, GPT-Neo, GPT-NeoX, Llama, Qwen2,
    Mistral, ...: ``base`` is ``model.base_model`` (``model.transformer`` / ``model.gpt_neox`` / ``model.model``) and
    ``head`` ``model.get_output_embeddings()``. Models that transform the head's output (soft-capping, a logit scale)
    or have no separate base model get ``None``: score them from their full logits. :class:`SentenceScorer` also
    checks the split numerically on the first sequences it scores.
    """
    base = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if base is None or base is model or not isinstance(head, torch.nn.Module):
        return None
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling"):
        value = getattr(text_config, name, None) or getattr(model, name, None)
        if value not in (None, 1, 1.0):
            return None
    return base, head


def _prefix_token_id(tokenizer, prefix_token_id: int | None) -> int:
    if prefix_token_id is not None:
        return int(prefix_token_id)
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(
        f"{type(tokenizer).__name__} has neither a BOS nor an EOS token, so there is no prefix token to condition on. "
        "Pass prefix_token_id=<id> (lm-evaluation-harness: --model_args prefix_token_id=...)."
    )


def encode_sentences(
    tokenizer, sentences: Sequence[str], prefix_token_id: int | None = None, max_length: int | None = None
) -> list[list[int]]:
    """Token ids of ``prefix_token + " " + sentence`` for each sentence, the sequences that are scored.

    Args:
        tokenizer: the model's tokenizer.
        sentences: the sentences.
        prefix_token_id: the conditioning token; default the tokenizer's BOS, else EOS.
        max_length: the model's context length, if known.

    Raises:
        ValueError: no prefix token, a sentence that encodes to no token (it would score 0 and tie with its pair),
            or a sequence longer than ``max_length``.
    """
    prefix = _prefix_token_id(tokenizer, prefix_token_id)
    encoded = tokenizer([" " + s for s in sentences], add_special_tokens=False)["input_ids"]
    empty = [s for s, ids in zip(sentences, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(
            f"{len(empty)} sentence(s) encode to no token with the tokenizer {tokenizer_display_name(tokenizer)!r} "
            f"({type(tokenizer).__name__}, {len(tokenizer)} tokens), e.g. {empty[0]!r}. A sentence "
            "without tokens has no score: its pair would tie and count as correct. Use the model's own tokenizer "
            "(--tokenizer_name) and BLiMP sentences with text."
        )
    sequences = [[prefix, *ids] for ids in encoded]
    longest = max((len(s) for s in sequences), default=0)
    if max_length is not None and longest > max_length:
        raise ValueError(f"A sentence needs {longest} tokens but the model takes at most {max_length}.")
    return sequences


@dataclass
class PrefixTrie:
    """The prefix tree of token sequences, nodes numbered in pre-order (a parent before its children, a subtree
    contiguous).

    Attributes:
        tokens: ``(N,)`` token of each node.
        parents: ``(N,)`` parent node, ``-1`` for a root.
        depths: ``(N,)`` position of the node's token in its sequences (a root has depth 0).
        ends: node of the last token of each input sequence, in input order.
    """

    tokens: np.ndarray
    parents: np.ndarray
    depths: np.ndarray
    ends: np.ndarray

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> PrefixTrie:
        """The trie of ``sequences`` (non-empty lists of token ids; duplicates share all their nodes)."""
        order = sorted(range(len(sequences)), key=lambda i: sequences[i])  # lexicographic = pre-order
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        ends = np.zeros(len(sequences), dtype=np.int64)
        path: list[int] = []  # node ids along the previous sequence
        previous: Sequence[int] = ()
        for index in order:
            seq = sequences[index]
            shared = 0
            limit = min(len(seq), len(previous))
            while shared < limit and seq[shared] == previous[shared]:
                shared += 1
            del path[shared:]
            for depth in range(shared, len(seq)):
                path.append(len(tokens))
                tokens.append(int(seq[depth]))
                parents.append(path[-2] if depth > 0 else -1)
                depths.append(depth)
            ends[index] = path[len(seq) - 1]
            previous = seq
        return cls(
            tokens=np.asarray(tokens, dtype=np.int64),
            parents=np.asarray(parents, dtype=np.int64),
            depths=np.asarray(depths, dtype=np.int64),
            ends=ends,
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def path_sums(self, node_values: np.ndarray) -> np.ndarray:
        """Sum of ``node_values`` from the root to each node (float64; parents precede children)."""
        totals = node_values.astype(np.float64)
        for depth in range(1, int(self.depths.max(initial=0)) + 1):
            nodes = np.flatnonzero(self.depths == depth)
            totals[nodes] += totals[self.parents[nodes]]
        return totals

    def ancestors(self, node: int) -> list[int]:
        """The ancestors of ``node``, root first (not the node itself)."""
        chain = []
        node = int(self.parents[node])
        while node >= 0:
            chain.append(node)
            node = int(self.parents[node])
        return chain[::-1]


def _ancestor_at(trie: PrefixTrie, node: int, depth: int) -> int:
    """The node at ``depth`` on the path to ``node`` (``node`` itself at its own depth)."""
    while trie.depths[node] > depth:
        node = int(trie.parents[node])
    return node


@dataclass
class _Row:
    nodes: list[int]  # trie nodes in pre-order: the repeated ancestors first, then the owned ones
    owned_from: int  # nodes[owned_from:] are computed (scored) in this row


def _fill_rows(trie: PrefixTrie, first: int, stop: int, capacity: int) -> list[_Row]:
    """Greedy rows of at most ``capacity`` tokens (repeated ancestors included) over the pre-order ``[first, stop)``."""
    rows = []
    node = first
    while node < stop:
        context = trie.ancestors(node)
        end = min(stop, node + max(1, capacity - len(context)))
        rows.append(_Row(nodes=context + list(range(node, end)), owned_from=len(context)))
        node = end
    return rows


def _plan_rows(trie: PrefixTrie, is_end: np.ndarray, batch_size: int, row_tokens: int) -> list[list[_Row]]:
    """Cut the pre-order into forwards of at most ``batch_size`` sentence ends, each into rows of at most
    ``row_tokens`` tokens, as even as the row count allows (rows of one forward are padded to the longest)."""
    forwards: list[tuple[int, int]] = []
    start, ends_in = 0, 0
    for node in range(len(trie)):
        if is_end[node]:
            if ends_in == batch_size:
                forwards.append((start, node))
                start, ends_in = node, 0
            ends_in += 1
    forwards.append((start, len(trie)))
    plan = []
    for first, stop in forwards:
        rows = _fill_rows(trie, first, stop, row_tokens)
        tokens = sum(len(row.nodes) for row in rows)
        even = _fill_rows(trie, first, stop, math.ceil(tokens / len(rows)) + 2)  # + room for shifted contexts
        plan.append(even if len(even) <= len(rows) else rows)
    return plan


class SentenceScorer:
    """Sum of log-probabilities of ``" " + sentence`` given one prefix token.

    Args:
        model: a causal LM (``model(input_ids, attention_mask, position_ids).logits``).
        tokenizer: its tokenizer.
        batch_size: at most this many sentences per forward pass (their shared prefixes computed once).
        dtype: ``None`` (the model as it is), ``"float32"`` or ``"bfloat16"`` (forward under autocast);
            log-probabilities are always reduced in float32 and summed in float64.
        prefix_token_id: the conditioning token; default BOS, else EOS.
        share_prefixes: run every distinct token prefix once (a prefix tree, see the module docstring); ``False``
            scores every sentence on its own, in length-sorted right-padded batches, as lm-evaluation-harness does.
        row_tokens: tokens per row of a shared forward (rows of one forward are padded to the same length; longer
            rows waste more attention on masked pairs, shorter ones repeat more ancestors).
        gather_head: with ``share_prefixes``, run the LM head only at the positions whose next-token distribution
            is scored (:func:`split_lm_head`); ``False`` computes the logits at every position of every row (the
            same scores, more work).
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        dtype: str | None = None,
        prefix_token_id: int | None = None,
        share_prefixes: bool = True,
        row_tokens: int = 128,
        gather_head: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if row_tokens < 2:
            raise ValueError(f"row_tokens={row_tokens} must be >= 2 (a row holds a context and a token).")
        if dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'bfloat16'.")
        check_tokenizer(tokenizer)
        self.model, self.tokenizer, self.batch_size, self.dtype = model, tokenizer, batch_size, dtype
        self.share_prefixes, self.row_tokens = share_prefixes, row_tokens
        self.prefix_token_id = _prefix_token_id(tokenizer, prefix_token_id)
        config = getattr(model, "config", None)
        self.max_length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self._tree_checked = False
        self._split = split_lm_head(model) if gather_head else None
        #: Token positions run by the last :meth:`score` call, and by scoring each sentence on its own.
        self.last_stats: dict[str, int] = {}

    def _autocast(self, device: torch.device):
        if self.dtype == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _ready(self, sequences: list[list[int]]):
        """The model in eval mode (its mode restored after), the tree forward checked on first use."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.share_prefixes and not self._tree_checked:
                self._check_tree_forward(sequences)
            yield
        finally:
            self.model.train(was_training)

    def encode(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of ``prefix_token + " " + sentence`` for each sentence (:func:`encode_sentences`)."""
        return encode_sentences(self.tokenizer, sentences, self.prefix_token_id, self.max_length)

    @torch.no_grad()
    def score(self, sentences: Sequence[str], progress: bool = True) -> list[float]:
        """Scores of ``sentences`` (each distinct sentence computed once).

        Raises:
            ValueError: a sentence encodes to no token (it would score 0 and tie with its pair), checked for every
                sentence before the model runs.
        """
        unique = list(dict.fromkeys(sentences))
        sequences = self.encode(unique)
        with self._ready(sequences):
            if self.share_prefixes:
                scores = self._score_shared(sequences, progress)
            else:
                scores = self._score_unshared(sequences, progress)
        by_sentence = dict(zip(unique, scores, strict=True))
        return [by_sentence[s] for s in sentences]

    @torch.no_grad()
    def score_pairs(self, pairs: Sequence[tuple[str, str]], progress: bool = True) -> list[tuple[float, float]]:
        """The two scores of each minimal pair, counted from the first token where the pair's sequences differ.

        The tokens before that point are the same context and the same tokens in both sentences: they add the same
        log-probability to both scores, so leaving them out changes neither the decision ``good >= bad`` nor the
        difference ``good - bad`` (float64 sums of the same node values). With ``share_prefixes`` the LM head then
        runs only at the positions such a suffix reads; :meth:`score` gives whole-sentence scores. Without prefix
        sharing (or when the tree forward was refused) the values are the whole-sentence scores.

        Raises:
            ValueError: as :meth:`score`.
        """
        unique = list(dict.fromkeys(s for pair in pairs for s in pair))
        sequences = self.encode(unique)
        with self._ready(sequences):
            if not self.share_prefixes:
                whole = dict(zip(unique, self._score_unshared(sequences, progress), strict=True))
                return [(whole[g], whole[b]) for g, b in pairs]
            index = {s: i for i, s in enumerate(unique)}
            splits = []  # (good, bad, first differing position)
            from_depth = [len(seq) for seq in sequences]  # score each sequence from this position on
            for good, bad in pairs:
                g, b = index[good], index[bad]
                a, c = sequences[g], sequences[b]
                d = next((k for k in range(min(len(a), len(c))) if a[k] != c[k]), min(len(a), len(c)))
                d = max(d, 1)  # position 0 (the prefix token) is never scored
                from_depth[g], from_depth[b] = min(from_depth[g], d), min(from_depth[b], d)
                splits.append((g, b, d))
            trie, totals = self._score_tree(sequences, progress, from_depth)
        scores = []
        for g, b, d in splits:
            branch = _ancestor_at(trie, int(trie.ends[g]), d - 1)  # the last node the two sequences share
            scores.append((float(totals[trie.ends[g]] - totals[branch]), float(totals[trie.ends[b]] - totals[branch])))
        return scores

    # ---- each sentence on its own (the harness's way) ------------------------------------------------------------

    def _score_unshared(self, sequences: list[list[int]], progress: bool) -> list[float]:
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        device = next(self.model.parameters()).device
        scores = [0.0] * len(sequences)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="BLiMP", unit="batch", disable=not progress):
            width = len(sequences[batch[0]])
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                seq = sequences[index]
                input_ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            with self._autocast(device):
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
            targets = input_ids[:, 1:]
            token_logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
            totals = (token_logprobs * mask[:, 1:]).sum(-1).tolist()  # float32 sums, like the harness
            for index, total in zip(batch, totals, strict=True):
                scores[index] = total
        total = sum(len(s) for s in sequences)
        self.last_stats = {
            "tokens_run": total,
            "tokens_unshared": total,
            "forwards": len(batches),
            "head_positions_read": total - len(sequences),
            "head_positions_run": sum(len(sequences[b[0]]) * len(b) for b in batches),
        }
        return scores

    # ---- shared prefixes: one forward per slice of the prefix tree -----------------------------------------------

    def _score_shared(self, sequences: list[list[int]], progress: bool) -> list[float]:
        trie, totals = self._score_tree(sequences, progress)
        return totals[trie.ends].tolist()

    def _score_tree(
        self, sequences: list[list[int]], progress: bool, from_depth: Sequence[int] | None = None
    ) -> tuple[PrefixTrie, np.ndarray]:
        """The trie of ``sequences`` and each node's path sum of log-probabilities; with ``from_depth``, only the
        nodes at depth >= ``from_depth[i]`` on sequence ``i``'s path are scored (the others add 0)."""
        trie = PrefixTrie.build(sequences)
        is_end = np.zeros(len(trie), dtype=bool)
        is_end[trie.ends] = True
        scored = np.ones(len(trie), dtype=bool)
        if from_depth is not None:
            scored[:] = False
            for end, first in zip(trie.ends, from_depth, strict=True):
                node = int(end)
                while node >= 0 and trie.depths[node] >= first:
                    scored[node] = True
                    node = int(trie.parents[node])
        longest = max(len(s) for s in sequences)
        row_tokens = max(self.row_tokens, longest + 1)  # a row holds a whole path and one more token ...
        if self.max_length is not None:
            row_tokens = min(row_tokens, max(self.max_length, longest))  # ... and no more positions than the model has
        plan = _plan_rows(trie, is_end, self.batch_size, row_tokens)
        device = next(self.model.parameters()).device
        node_logprobs = np.zeros(len(trie), dtype=np.float64)
        tokens_run = head_positions = logit_positions = 0
        for rows in tqdm(plan, desc="BLiMP", unit="batch", disable=not progress):
            width = max(len(row.nodes) for row in rows)
            input_ids = np.full((len(rows), width), self.prefix_token_id, dtype=np.int64)
            positions = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width, width), dtype=bool)
            mask[:, np.arange(width), np.arange(width)] = True  # padding sees itself only (no empty softmax row)
            edge_rows, edge_parents, edge_nodes = [], [], []
            for r, row in enumerate(rows):
                nodes = np.asarray(row.nodes, dtype=np.int64)
                input_ids[r, : len(nodes)] = trie.tokens[nodes]
                positions[r, : len(nodes)] = trie.depths[nodes]
                local = {node: i for i, node in enumerate(row.nodes)}
                for i, node in enumerate(row.nodes):
                    parent = int(trie.parents[node])
                    if parent >= 0:
                        mask[r, i] = mask[r, local[parent]]
                        mask[r, i, i] = True
                        if i >= row.owned_from and scored[node]:
                            edge_rows.append(r)
                            edge_parents.append(local[parent])
                            edge_nodes.append(node)
                tokens_run += len(nodes)
            # The positions whose next-token distribution is read (a parent of several scored children once).
            read, edge_read = np.unique(
                np.asarray(edge_rows, dtype=np.int64) * width + np.asarray(edge_parents, dtype=np.int64),
                return_inverse=True,
            )
            inputs = {
                "input_ids": torch.from_numpy(input_ids).to(device),
                "attention_mask": torch.from_numpy(mask)[:, None].to(device),  # (B, 1, T, T): True = attend
                "position_ids": torch.from_numpy(positions).to(device),
            }
            read_t = torch.from_numpy(read).to(device)
            with self._autocast(device):
                if self._split is not None:
                    base, head = self._split
                    hidden = base(**inputs).last_hidden_state  # (B, T, H)
                    picked = head(hidden.flatten(0, 1)[read_t])  # (R, V): the head at the read positions only
                else:
                    picked = self.model(**inputs).logits.flatten(0, 1)[read_t]  # (B, T, V) -> (R, V)
            head_positions += len(read)
            logit_positions += len(rows) * width if self._split is None else len(read)
            if not edge_nodes:
                continue
            picked = picked.float()
            lse = picked.logsumexp(-1)  # (R,)
            nodes = np.asarray(edge_nodes, dtype=np.int64)
            targets = torch.from_numpy(trie.tokens[nodes]).to(device)
            edge_t = torch.from_numpy(edge_read).to(device)
            logprobs = picked[edge_t, targets] - lse[edge_t]  # each scored token under its parent's distribution
            node_logprobs[nodes] = logprobs.double().cpu().numpy()
        totals = trie.path_sums(node_logprobs)
        self.last_stats = {
            "tokens_run": tokens_run,
            "tokens_unshared": sum(len(s) for s in sequences),
            "forwards": len(plan),
            "head_positions_read": head_positions,
            "head_positions_run": logit_positions,
        }
        return trie, totals

    def _check_tree_forward(self, sequences: list[list[int]]) -> None:
        """Score two sequences with and without the tree mask; fall back to unshared scoring if they disagree."""
        sample = sorted(sequences, key=len)[-2:]  # the longest two: a real test of masks and positions
        if self._split is not None:
            self._check_split_head(sample[-1])
        try:
            shared = self._score_shared(sample, progress=False)
            unshared = self._score_unshared(sample, progress=False)
            gap = max(abs(a - b) for a, b in zip(shared, unshared, strict=True))
        except (TypeError, ValueError, RuntimeError, IndexError) as err:
            gap, reason = math.inf, f"{type(err).__name__}: {err}"
        else:
            reason = f"scores differ by {gap:.3g} nats"
        if gap > _SELF_CHECK_TOLERANCE:
            logger.warning(
                "%s does not score a prefix tree like separate sentences (%s): it may not accept a 4-D attention "
                "mask with position_ids. Scoring every sentence on its own instead (share_prefixes=False).",
                type(self.model).__name__,
                reason,
            )
            self.share_prefixes = False
        self._tree_checked = True

    def _check_split_head(self, sequence: list[int]) -> None:
        """Keep the split head only if ``head(base(x))`` gives the model's own logits on ``sequence``."""
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([sequence], device=device)
        base, head = self._split
        try:
            with self._autocast(device):
                full = self.model(input_ids=input_ids).logits.float()
                split = head(base(input_ids=input_ids).last_hidden_state).float()
            gap = (full - split).abs().max().item() / max(1.0, full.abs().max().item())
        except (TypeError, ValueError, RuntimeError, AttributeError) as err:
            gap, reason = math.inf, f"{type(err).__name__}: {err}"
        else:
            reason = f"relative gap {gap:.3g}"
        if not gap <= _SPLIT_HEAD_TOLERANCE:
            logger.info(
                "%s: its logits are not its output layer on its base model's hidden states (%s); computing the full "
                "logits at every position.",
                type(self.model).__name__,
                reason,
            )
            self._split = None
