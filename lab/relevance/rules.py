"""LRP rules, each a small autograd function whose backward maps output relevance to input relevance.

Forward passes compute exactly what the model computes; backward passes carry *relevance* instead of
gradients (the LXT idea). Equation numbers refer to Chefer, Gur & Wolf 2021 (paper 000 in ../shared/papers).
Every rule has a slow reference formula in tests/test_rules.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

STABILIZER = 1e-12


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / (denominator + sign * 1e-12), and 0 where the denominator is exactly 0 (authors' code).

    (|d| + 1e-12) carrying d's sign equals d ± 1e-12; written in place to spare passes over large tensors."""
    stabilised = denominator.abs().add_(STABILIZER).copysign_(denominator)
    return torch.div(numerator, stabilised).masked_fill_(denominator == 0, 0.0)


def per_example_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch one, shaped to broadcast back onto t."""
    return t.sum(dim=tuple(range(1, t.dim())), keepdim=True)


# --- layers with weights --------------------------------------------------------------------------------


def generic_relevance(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Eq. 2: R_j = x_j * sum_i w_ij R_i / z_i with z_i = sum_j x_j w_ij (bias excluded)."""
    z = F.linear(x, weight)
    return x * F.linear(safe_divide(relevance, z), weight.t())


def rule_eq4(x, weight, relevance, **_):
    """Eq. 4 (standard LRP): G(x+, w+) + G(x-, w-), each normalised separately (doubles, Eq. 5)."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    return generic_relevance(xp, wp, relevance) + generic_relevance(xn, wn, relevance)


def rule_alpha_beta(x, weight, relevance, alpha: float = 1.0, beta: float = 0.0, z=None, **_):
    """LRP-alpha-beta: alpha * (positive contributions) - beta * (negative contributions).

    Positive contributions x+w+ and x-w- are normalised jointly; with alpha=1, beta=0 this is exactly Eq. 6
    (the q-set {x_j w_ji >= 0}), which conserves relevance for mixed-sign inputs. Computed with
    x+w+ + x-w- = (xw + |x||w|)/2 and x+w- + x-w+ = (xw - |x||w|)/2, so the backward costs three matmuls
    (z = xw, without bias, may be passed in from the forward pass).
    """
    abs_x, abs_w = x.abs(), weight.abs()
    z = F.linear(x, weight) if z is None else z
    z_abs = F.linear(abs_x, abs_w)

    def share(sign):  # the two halves cancel: (xw ± |x||w|)/2 over (z ± z_abs)/2
        s = safe_divide(relevance, z.add(z_abs, alpha=sign))
        out = F.linear(s, weight.t()).mul_(x)
        return out.add_(F.linear(s, abs_w.t()).mul_(abs_x), alpha=sign)

    out = share(1.0) if alpha == 1 else share(1.0).mul_(alpha)
    if beta:
        out = out - beta * share(-1.0)
    return out


def _stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + eps * sign(z) (sign(0) = +1): the epsilon rule's denominator."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0)


def rule_epsilon(x, weight, relevance, bias=None, epsilon: float = 1e-6, **_):
    """LRP-epsilon (Bach et al. 2015): z includes the bias; a stabiliser eps*sign(z) absorbs small z."""
    return x * F.linear(relevance / _stabilised(F.linear(x, weight, bias), epsilon), weight.t())


def epsilon_absorbed(x, weight, relevance, bias=None, epsilon: float = 1e-6) -> torch.Tensor:
    """Per example, the relevance the epsilon rule leaves to the bias and the stabiliser:
    sum_i (b_i + eps sign z_i) R_i / (z_i + eps sign z_i), so that sum R_x + this = sum R."""
    z = F.linear(x, weight, bias)
    zs = _stabilised(z, epsilon)
    return per_example_sum((zs - F.linear(x, weight)) * relevance / zs).reshape(-1)


def rule_zb(x, weight, relevance, low=None, high=None, **_):
    """z^B rule for the first layer on bounded inputs (pixels): low <= x <= high."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    low = torch.as_tensor(low, dtype=x.dtype).expand_as(x)
    high = torch.as_tensor(high, dtype=x.dtype).expand_as(x)
    z = F.linear(x, weight) - F.linear(low, wp) - F.linear(high, wn)
    s = safe_divide(relevance, z)
    return x * F.linear(s, weight.t()) - low * F.linear(s, wp.t()) - high * F.linear(s, wn.t())


def rule_wu_ong_code(x, weight, relevance, bias=None, alpha: float = 0.5, beta: float = 0.5,
                     epsilon: float = 1e-7, **_):
    """The alpha-beta rule of Wu & Ong's code (frankaging/BERT-LRP `backprop_lrp_fc` + `rescale_lrp`).

    Positive and negative *weights* are split (not contributions; inputs keep their sign), the biases' positive /
    negative parts join the denominators, R_x = x * (alpha (R / z+) W+ + beta (R / z-) W-) with z+ = x W+ + b+ + eps,
    z- = x W- + b- - eps; then |R_x| is rescaled per example to the incoming total: R_x <- |R_x| (sum R + eps) /
    (sum |R_x| + eps): one sign per example, the incoming total kept."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    bp = bias.clamp(min=0) if bias is not None else 0.0
    bn = bias.clamp(max=0) if bias is not None else 0.0
    c_p = F.linear(relevance / (F.linear(x, wp) + bp + epsilon), wp.t())
    c_n = F.linear(relevance / (F.linear(x, wn) + bn - epsilon), wn.t())
    out = (x * (alpha * c_p + beta * c_n)).abs()
    return out * ((per_example_sum(relevance) + 1e-7) / (per_example_sum(out) + 1e-7))


LINEAR_RULES = {"eq4": rule_eq4, "alpha_beta": rule_alpha_beta, "epsilon": rule_epsilon, "zb": rule_zb}


class Mode:
    """Shared switch read at backward time: one forward graph, a gradient backward and a relevance backward.
    relevance_only=True skips keeping what the gradient backward would need."""

    def __init__(self, relevance: bool = True, relevance_only: bool = True):
        self.relevance = relevance
        self.relevance_only = relevance_only


class LinearRelevance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, rule, params, mode):
        out = F.linear(x, weight, bias)
        z = out if bias is None else out - bias  # z without bias, reused by the alpha-beta rule
        ctx.save_for_backward(x, weight, bias if bias is not None else torch.empty(0), z)
        ctx.rule, ctx.params, ctx.has_bias, ctx.mode = rule, params, bias is not None, mode
        return out

    @staticmethod
    def backward(ctx, relevance):
        x, weight, bias, z = ctx.saved_tensors
        if not ctx.mode.relevance or ctx.rule == "gradient":
            return relevance @ weight, None, None, None, None, None
        params = dict(ctx.params, bias=bias if ctx.has_bias else None)
        absorb = params.pop("absorb", None)
        if ctx.rule == "alpha_beta":
            params["z"] = z
        if absorb is not None and ctx.rule == "epsilon":
            absorb(epsilon_absorbed(x, weight, relevance, params["bias"], params["epsilon"]))
        return LINEAR_RULES[ctx.rule](x, weight, relevance, **params), None, None, None, None, None


# --- non-parametric operators (Sec. 3.2) ----------------------------------------------------------------


def normalize_pair(r_u, r_v, total, absolute: str = "sum_abs"):
    """Sec. 3.2 normalisation of two operands' relevance so that sum(R_u)+sum(R_v) = total, each in [0, total].

    absolute="sum_abs": the paper's sum_j |R_j|; "abs_sum": the authors' code |sum_j R_j|.
    """
    if absolute == "sum_abs":
        a_u, a_v = per_example_sum(r_u.abs()), per_example_sum(r_v.abs())
    elif absolute == "abs_sum":
        a_u, a_v = per_example_sum(r_u).abs(), per_example_sum(r_v).abs()
    else:
        raise ValueError(f"absolute must be 'sum_abs' or 'abs_sum', got {absolute!r}")
    share_u, share_v = safe_divide(a_u, a_u + a_v), safe_divide(a_v, a_u + a_v)
    r_u = r_u * safe_divide(share_u * total, per_example_sum(r_u))
    r_v = r_v * safe_divide(share_v * total, per_example_sum(r_v))
    return r_u, r_v


def add_relevance(u, v, relevance, rule: str, absolute: str = "sum_abs"):
    """Residual add. 'z': Eq. 8 (R_u = u/(u+v) R, conserves, Lemma 1); 'normalized': Sec. 3.2 on top of it."""
    if rule == "gradient":
        return relevance, relevance
    s = safe_divide(relevance, u + v)
    r_u, r_v = u * s, v * s
    if rule == "normalized":
        r_u, r_v = normalize_pair(r_u, r_v, per_example_sum(relevance), absolute)
    elif rule != "z":
        raise ValueError(f"unknown add rule {rule!r}")
    return r_u, r_v


def matmul_relevance(a, b, relevance, rule: str, absolute: str = "sum_abs", z=None):
    """Matrix product a @ b. 'naive': Eq. 8 for each operand (total doubles, Lemma 1); 'halve': the
    authors' code (each /2), also AttnLRP's epsilon + uniform rule (Achtibat et al. Prop. 3.3, Eq. 7, N=2);
    'normalized': Sec. 3.2 normalisation; 'first_constant': `a` held constant, all relevance to `b` (CP-LRP)."""
    if rule == "gradient":
        return relevance @ b.transpose(-1, -2), a.transpose(-1, -2) @ relevance
    s = safe_divide(relevance, a @ b if z is None else z)  # z: the forward output, when saved
    if rule == "first_constant":  # CP-LRP (Ali et al. AH-rule): `a` (the attention map) is a constant
        return torch.zeros_like(a), b * (a.transpose(-1, -2) @ s)
    r_a = a * (s @ b.transpose(-1, -2))
    r_b = b * (a.transpose(-1, -2) @ s)
    if rule == "halve":
        return r_a / 2, r_b / 2
    if rule == "normalized":
        return normalize_pair(r_a, r_b, per_example_sum(relevance), absolute)
    if rule != "naive":
        raise ValueError(f"unknown matmul rule {rule!r}")
    return r_a, r_b


class AddRelevance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, v, rule, absolute, mode):
        ctx.save_for_backward(u, v)
        ctx.rule, ctx.absolute, ctx.mode = rule, absolute, mode
        return u + v

    @staticmethod
    def backward(ctx, relevance):
        u, v = ctx.saved_tensors
        rule = ctx.rule if ctx.mode.relevance else "gradient"
        r_u, r_v = add_relevance(u, v, relevance, rule, ctx.absolute)
        return r_u, r_v, None, None, None


def mask_heads(relevance: torch.Tensor, head_mask: torch.Tensor, renormalize: bool = True) -> torch.Tensor:
    """Mask-LRP (Song et al. Eq. 9 and after): keep the relevance of important heads, rescaled per example
    so that the kept relevance sums to the incoming total (renormalize=False: not rescaled, the authors' code,
    `cam * head_mask`). relevance: [batch, heads, ...]; head_mask: [heads]."""
    shape = (1, -1) + (1,) * (relevance.dim() - 2)
    masked = relevance * head_mask.to(relevance.dtype).reshape(shape)
    if not renormalize:
        return masked
    kept, total = per_example_sum(masked), per_example_sum(relevance)
    # exact division (x / x == 1), so an all-ones mask leaves the relevance bit-for-bit unchanged
    scale = torch.where(kept == 0, torch.zeros_like(kept), total / torch.where(kept == 0, torch.ones_like(kept), kept))
    return masked * scale


class MatmulRelevance(torch.autograd.Function):
    """a @ b with a relevance backward. Optionally records the relevance (or, in gradient mode, the gradient) of
    `a` (the attention map). A head mask acts on the relevance flowing down (rescaled to the incoming total unless
    mask_renormalize is False); Mask-LRP records the map's relevance before masking unless mask_recorded, by the
    matmul rule or by `mask_record_rule` when given (the authors' MGAE records the naive, un-halved relevance)."""

    @staticmethod
    def forward(ctx, a, b, rule, absolute, record, head_mask, mask_recorded, mode, mask_renormalize=True,
                mask_record_rule=None):
        out = a @ b
        ctx.save_for_backward(a, b, out)
        ctx.rule, ctx.absolute, ctx.record, ctx.mode = rule, absolute, record, mode
        ctx.head_mask, ctx.mask_recorded, ctx.mask_renormalize = head_mask, mask_recorded, mask_renormalize
        ctx.mask_record_rule = mask_record_rule or rule
        return out

    @staticmethod
    def backward(ctx, relevance):
        a, b, z = ctx.saved_tensors
        if not ctx.mode.relevance:
            r_a, r_b = matmul_relevance(a, b, relevance, "gradient")
            if ctx.record is not None:
                ctx.record(r_a, gradient=True)
            return r_a, r_b, None, None, None, None, None, None, None, None
        if ctx.head_mask is not None:
            masked = mask_heads(relevance, ctx.head_mask, ctx.mask_renormalize)
            if ctx.record is not None and not ctx.mask_recorded:
                ctx.record(matmul_relevance(a, b, relevance, ctx.mask_record_rule, ctx.absolute, z)[0])
            relevance = masked
        r_a, r_b = matmul_relevance(a, b, relevance, ctx.rule, ctx.absolute, z)
        if ctx.record is not None and (ctx.head_mask is None or ctx.mask_recorded):
            ctx.record(r_a)
        return r_a, r_b, None, None, None, None, None, None, None, None


class Passthrough(torch.autograd.Function):
    """Element-wise non-linearities (GELU, softmax, LayerNorm, tanh, scaling): relevance passes unchanged; in
    gradient mode the true derivative is taken through a small saved subgraph."""

    @staticmethod
    def forward(ctx, x, fn, mode):
        ctx.mode = mode
        if mode.relevance_only:
            return fn(x)
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            y = fn(x_)
        ctx.x_, ctx.y = x_, y
        return y.detach()

    @staticmethod
    def backward(ctx, relevance):
        if ctx.mode.relevance:
            return relevance, None, None
        (grad,) = torch.autograd.grad(ctx.y, ctx.x_, relevance, retain_graph=True)
        return grad, None, None


class Probe(torch.autograd.Function):
    """Identity that reports the relevance flowing through it (for conservation checks)."""

    @staticmethod
    def forward(ctx, x, callback):
        ctx.callback = callback
        return x.view_as(x)

    @staticmethod
    def backward(ctx, relevance):
        ctx.callback(relevance)
        return relevance, None


# --- AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022) ------------------------------


def softmax_relevance(x, s, relevance):
    """AttnLRP Prop. 3.1: R_i = x_i (R_i' - s_i sum_j R_j'), x the softmax input, s its output.

    Equals gradient x input through the softmax; not conserving: sum_j R_j' (1 - x_j + <s, x>) goes to the
    Taylor bias (`softmax_absorbed`). Masked positions (x = dtype min, s = 0, R' = 0) get 0."""
    return x * (relevance - s * relevance.sum(-1, keepdim=True))


def softmax_absorbed(x, s, relevance):
    """The relevance absorbed by the softmax rule's bias term, per example: sum_j R_j' (1 - x_j + <s, x>)."""
    sx = (s * x).sum(-1, keepdim=True)
    return per_example_sum(relevance * (1.0 - x + sx)).reshape(-1)


class SoftmaxRelevance(torch.autograd.Function):
    """softmax(x, dim=-1) with the AttnLRP softmax rule (relevance mode) or its true derivative (gradient mode)."""

    @staticmethod
    def forward(ctx, x, mode, absorb):
        s = torch.softmax(x, dim=-1)
        ctx.save_for_backward(x, s)
        ctx.mode, ctx.absorb = mode, absorb
        return s

    @staticmethod
    def backward(ctx, relevance):
        x, s = ctx.saved_tensors
        if not ctx.mode.relevance:
            return s * (relevance - (s * relevance).sum(-1, keepdim=True)), None, None
        if ctx.absorb is not None:
            ctx.absorb(softmax_absorbed(x, s, relevance))
        return softmax_relevance(x, s, relevance), None, None


def norm_relevance(x, norm, relevance, epsilon: float = 1e-6, absorb=None):
    """LayerNorm / RMSNorm with the normaliser treated as a constant (AttnLRP Prop. 3.4; CP-LRP's LN-rule):
    y = w * (x - mean x) / sigma + b is then linear in x and takes the epsilon rule, R_x = x * J^T (R / (y + eps)).
    The bias b absorbs its share, as in any epsilon rule (reported to `absorb`, per example, if given).
    `norm`: the module (LayerNorm, or an RMSNorm with `variance_epsilon` as in Hugging Face models)."""
    centered = not hasattr(norm, "variance_epsilon")  # HF RMSNorm modules name their epsilon variance_epsilon
    eps = norm.eps if centered else norm.variance_epsilon
    xc = x - x.mean(-1, keepdim=True) if centered else x
    sigma = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    y = norm(x)
    weight = norm.weight if norm.weight is not None else torch.ones_like(x[..., 0, None])
    ys = _stabilised(y, epsilon)
    if absorb is not None:
        bias = getattr(norm, "bias", None)
        absorb(per_example_sum((ys - (y if bias is None else y - bias)) * relevance / ys).reshape(-1))
    u = weight * relevance / ys / sigma
    if centered:
        u = u - u.mean(-1, keepdim=True)
    return x * u


class NormRelevance(torch.autograd.Function):
    """A normalisation module with `norm_relevance` (relevance mode) or its true derivative (gradient mode)."""

    @staticmethod
    def forward(ctx, x, norm, epsilon, mode, absorb):
        ctx.norm, ctx.epsilon, ctx.mode, ctx.absorb = norm, epsilon, mode, absorb
        if mode.relevance_only:
            ctx.save_for_backward(x)
            return norm(x)
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            y = norm(x_)
        ctx.save_for_backward(x)
        ctx.x_, ctx.y = x_, y
        return y.detach()

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        if ctx.mode.relevance:
            with torch.no_grad():
                return norm_relevance(x, ctx.norm, relevance, ctx.epsilon, ctx.absorb), None, None, None, None
        (grad,) = torch.autograd.grad(ctx.y, ctx.x_, relevance, retain_graph=True)
        return grad, None, None, None, None
