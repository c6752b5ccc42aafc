r"""Slab domain decomposition: one grid over the devices of a node, equal to one device.

The grid's slowest axis (axis 0: ``z`` in 3D, ``y`` in 2D) is split into ``N`` slabs, one per
device of a one-axis ``jax.sharding.Mesh``. Every array keeps its meaning — the whole grid — and
only its placement changes: a field is sharded along axis 0 (``P("x")``, the *x-slab* layout), a
field's DCT coefficients along axis 1 (``P(None, "x")``, the *transposed* layout). The pointwise
parts of a step (reactions, coefficient functions, observables, the rollout's checks) are the
model's own functions of whole arrays, partitioned by XLA (a reduction over the grid becomes a
local sum and an all-reduce of one number); every operator that couples neighbouring cells runs as
one ``shard_map`` with its communication written out:

- **local stencils** (transport, the limiter, :func:`._stencils.transport`): one halo exchange per
  stage for every array that enters a stencil (the fields, attractants, cell-array ``D`` and ``χ``,
  the mask), stacked: two ``lax.ppermute`` (ghost layers to the slab below and above). Ghost width 2
  with taxis (a MUSCL face value needs the slope of the cell beyond), else 1. At the physical walls
  the ghosts are reflected (``u_{-1} = u_0``, ``u_{-2} = u_1``), which makes the limiter's slope at
  the wall cell 0 as on one device, and the wall faces' fluxes are set to the one-device values
  (zero flux, or the fixed-value flux), so the result is that of one device.
- **spectral transforms** (DCT-II/DST-II, :mod:`._spectral`): the local axes are transformed on the
  slab, one ``lax.all_to_all`` (``tiled``) transposes to the transposed layout, axis 0 is
  transformed there; the coefficients stay in that layout (symbols, ``φ``-functions and the
  spectral schemes' carried coefficients live there) and the inverse comes back the same way. All
  spectral fields of a stage share one transpose each way, and so do the quasi-steady fields of one
  kind.
- **implicit diffusion** (the LOD tridiagonal sweeps of :mod:`._diffusion`): along axes 1, 2 on the
  slab; along axis 0 after one transpose of all split fields with their face weights, back after.

The decomposition is equal to one device up to the order of floating-point operations (partial
sums of reductions, the separable DCT): ``tests/test_core_decomposition.py``; ``docs/numerics.md``
§11 counts the collectives of a step.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _spectral as spectral
from . import _stencils as stencils
from ._diffusion import _face_rows, mprk22_first, mprk22_second


class OneDevice:
    """The local operators of a stage on one device: the whole grid in one array (the reference
    that :class:`Slabs` equals). Every field is transformed and transported on its own."""

    def transport_many(self, terms, spacing) -> dict:
        """``{name: transport}`` of ``{name: TransportTerm}`` (:class:`._schemes.TransportTerm`)."""
        return {name: term.apply(spacing) for name, term in terms.items()}

    def face_speeds_many(self, requests, spacing) -> dict:
        """``{name: [max face speed per axis]}`` of ``{name: (taxis terms, mask)}``."""
        return {name: stencils.max_face_speed(taxis, spacing, mask) for name, (taxis, mask) in requests.items()}

    def forward_many(self, items) -> dict:
        """``{name: to_spectral(x, dirichlet)}`` of ``{name: (x, dirichlet)}``."""
        return {name: spectral.to_spectral(x, dirichlet) for name, (x, dirichlet) in items.items()}

    def inverse_many(self, items) -> dict:
        """``{name: from_spectral(x, dirichlet)}`` of ``{name: (x, dirichlet)}``."""
        return {name: spectral.from_spectral(x, dirichlet) for name, (x, dirichlet) in items.items()}


ONE_DEVICE = OneDevice()


def working_device_counts(shape, limit: int = 64) -> list[int]:
    """The device counts ``N > 1`` (up to ``limit``) that split a grid of ``shape`` into slabs:
    ``N`` divides axes 0 and 1, and every slab has at least 2 cells along axis 0 (the ghost width)."""
    if len(shape) < 2:
        return []
    return [n for n in range(2, limit + 1) if shape[0] % n == 0 and shape[1] % n == 0 and shape[0] // n >= 2]


def check_split(shape, n: int) -> None:
    """ValueError (saying which device counts and grid sizes work) unless ``n`` devices split a grid of
    ``shape`` into slabs (:func:`working_device_counts`)."""
    if len(shape) < 2:
        raise ValueError(f"a {len(shape)}D grid {tuple(shape)} is not decomposed over devices: slabs need 2 or 3 axes")
    if shape[0] % n == 0 and shape[1] % n == 0 and shape[0] // n >= 2:
        return
    works = working_device_counts(shape)
    counts = ", ".join(map(str, works)) if works else "none"
    raise ValueError(
        f"grid {tuple(shape)} cannot be split into {n} slabs: the device count must divide axes 0 and 1 "
        f"({shape[0]} and {shape[1]}: slabs along axis 0, the spectral transpose along axis 1) and leave at least "
        f"2 cells per slab along axis 0; device counts that work for this grid: {counts}; for {n} devices, axes 0 "
        f"and 1 must be multiples of {n} (axis 0 at least {2 * n})"
    )


def _is_field(x, shape) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and tuple(x.shape) == tuple(shape)


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray)


class _Split:
    """A pytree's leaves sorted for a ``shard_map``: grid fields (split into slabs, deduplicated by
    identity: an attractant shared by several terms travels once), other arrays (replicated) and
    everything else (static, closed over)."""

    def __init__(self, tree, shape):
        self.leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        self.fields, self.replicated, self.where = [], [], []
        seen = {}
        for leaf in self.leaves:
            if _is_field(leaf, shape):
                if id(leaf) not in seen:
                    seen[id(leaf)] = len(self.fields)
                    self.fields.append(leaf)
                self.where.append(("field", seen[id(leaf)]))
            elif _is_array(leaf):
                self.where.append(("replicated", len(self.replicated)))
                self.replicated.append(leaf)
            else:
                self.where.append(("static", leaf))

    def rebuild(self, fields, replicated):
        leaves = []
        for kind, value in self.where:
            leaves.append(fields[value] if kind == "field" else replicated[value] if kind == "replicated" else value)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


class Slabs(eqx.Module):
    """A grid of ``shape`` split along axis 0 over the devices of a one-axis ``mesh`` (module docstring).

    Build with :meth:`of` (None for no mesh or a mesh of one device). Its methods are the operators of
    :class:`OneDevice`, on whole (sharded) arrays, plus the transforms and sweeps the schemes use.
    """

    mesh: Mesh = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    @classmethod
    def of(cls, mesh, grid) -> Slabs | None:
        """The slabs of ``grid`` over ``mesh`` (a ``jax.sharding.Mesh`` with one axis; None: one device)."""
        if mesh is None:
            return None
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh={mesh!r}: a jax.sharding.Mesh(devices, ('x',)) is expected")
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh has axes {mesh.axis_names}: a grid is split along one mesh axis, e.g. ('x',)")
        if mesh.size == 1:
            return None
        check_split(grid.shape, mesh.size)
        return cls(mesh, tuple(grid.shape))

    # -- layout ----------------------------------------------------------------------------------

    @property
    def axis(self) -> str:
        """The mesh axis the slabs are split over."""
        return self.mesh.axis_names[0]

    @property
    def n(self) -> int:
        """The number of slabs (devices)."""
        return self.mesh.size

    def field_spec(self, batch: int = 0) -> P:
        """Fields (``batch`` leading stacking axes): split along grid axis 0."""
        return P(*([None] * batch), self.axis)

    def spectral_spec(self, batch: int = 0) -> P:
        """Spectral coefficients (``batch`` leading stacking axes): split along grid axis 1."""
        return P(*([None] * (batch + 1)), self.axis)

    def sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def place(self, tree):
        """``tree`` on the mesh: arrays of the grid's shape split into slabs, other arrays replicated
        (what :func:`simulate` does to the initial state and the parameters)."""

        def put(x):
            if _is_field(x, self.shape):
                return jax.device_put(x, self.sharding(self.field_spec()))
            if _is_array(x):
                return jax.device_put(x, self.sharding(P()))
            return x

        return jax.tree_util.tree_map(put, tree)

    def _shard_map(self, body, in_specs, out_specs):
        return jax.shard_map(body, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    # -- halo exchange -----------------------------------------------------------------------------

    def _exchange(self, x, width: int):
        """Inside a ``shard_map``: the local slabs ``x`` (stacked: ``(K, m, …)``) with ``width`` ghost
        layers on both sides along axis 1, from the neighbouring slabs (two ``lax.ppermute``), reflected
        at the physical walls (``u_{-1} = u_0``, ``u_{-2} = u_1``)."""
        n, axis = self.n, self.axis
        first, last = x[:, :width], x[:, x.shape[1] - width :]
        below = lax.ppermute(last, axis, [(i, i + 1) for i in range(n - 1)])  # becomes the next slab's low ghosts
        above = lax.ppermute(first, axis, [(i + 1, i) for i in range(n - 1)])
        index = lax.axis_index(axis)
        low = jnp.where(index == 0, jnp.flip(first, 1), below)
        high = jnp.where(index == n - 1, jnp.flip(last, 1), above)
        return jnp.concatenate([low, x, high], axis=1)

    def _padded(self, fields, width: int):
        """Inside a ``shard_map``: every local field with ``width`` ghost layers, one exchange for all
        (stacked per dtype)."""
        out = [None] * len(fields)
        by_dtype = {}
        for i, f in enumerate(fields):
            by_dtype.setdefault(jnp.dtype(f.dtype), []).append(i)
        for indices in by_dtype.values():
            padded = self._exchange(jnp.stack([fields[i] for i in indices]), width)
            for k, i in enumerate(indices):
                out[i] = padded[k]
        return out

    def _above(self, fields):
        """Inside a ``shard_map``: every local field with one ghost layer above (the next slab's first
        row; one ``lax.ppermute`` for all, stacked per dtype), a copy of the last row at the high wall."""
        out = [None] * len(fields)
        by_dtype = {}
        for i, f in enumerate(fields):
            by_dtype.setdefault(jnp.dtype(f.dtype), []).append(i)
        _, at_high = self._walls()
        for indices in by_dtype.values():
            x = jnp.stack([fields[i] for i in indices])
            above = lax.ppermute(x[:, :1], self.axis, [(i + 1, i) for i in range(self.n - 1)])
            padded = jnp.concatenate([x, jnp.where(at_high, x[:, -1:], above)], axis=1)
            for k, i in enumerate(indices):
                out[i] = padded[k]
        return out

    def _walls(self):
        """Inside a ``shard_map``: whether this slab holds the low and the high wall of axis 0."""
        index = lax.axis_index(self.axis)
        return index == 0, index == self.n - 1

    # -- local stencils ----------------------------------------------------------------------------

    def transport_many(self, terms, spacing) -> dict:
        """:meth:`OneDevice.transport_many` with one halo exchange for all terms."""
        trivial = {name: jnp.zeros_like(t.u) for name, t in terms.items() if stencils._is_zero(t.diffusivity) and
                   not t.taxis}  # fmt: skip
        terms = {name: t for name, t in terms.items() if name not in trivial}
        if not terms:
            return trivial
        names = tuple(terms)
        split = _Split([terms[name] for name in names], self.shape)
        width = 2 if any(terms[name].taxis for name in names) else 1

        def body(fields, replicated):
            padded = self._padded(fields, width)
            local_terms = split.rebuild(fields, replicated)
            padded_terms = split.rebuild(padded, replicated)
            at_low, at_high = self._walls()
            return tuple(
                _slab_transport(p, t, width, spacing, at_low, at_high)
                for p, t in zip(padded_terms, local_terms, strict=True)
            )

        in_specs = ([self.field_spec()] * len(split.fields), [P()] * len(split.replicated))
        out_specs = tuple(self.field_spec() for _ in names)
        out = self._shard_map(body, in_specs, out_specs)(split.fields, split.replicated)
        return {**trivial, **dict(zip(names, out, strict=True))}

    def face_speeds_many(self, requests, spacing) -> dict:
        """:meth:`OneDevice.face_speeds_many` with one halo exchange (width 1) for all requests; the
        local maxima of all terms and axes go in one ``all_gather`` (``N × K`` numbers)."""
        if not requests:
            return {}
        names = tuple(requests)
        split = _Split([requests[name] for name in names], self.shape)

        def body(fields, replicated):
            padded = self._padded(fields, 1)
            local = split.rebuild(fields, replicated)
            ghosts = split.rebuild(padded, replicated)
            maxima = [_local_face_speeds(p, loc, spacing) for p, loc in zip(ghosts, local, strict=True)]
            flat = [m for per_name in maxima for per_axis in per_name for m in per_axis]
            dtype = jnp.result_type(*flat)
            # every slab's maxima to every slab (N × K numbers) and their maximum: a pmax, but with a
            # derivative (the rollout's bounds are outputs of a differentiated simulate)
            every = lax.all_gather(jnp.stack([m.astype(dtype) for m in flat]), self.axis)
            flat = iter(jnp.max(every, axis=0))
            out = []
            for per_name in maxima:
                speeds = []
                for per_axis in per_name:
                    speed = 0.0
                    for _ in per_axis:  # Σ over taxis terms of the global maxima, as on one device
                        speed = speed + next(flat)
                    speeds.append(speed)
                out.append(speeds)
            return tuple(out)

        in_specs = ([self.field_spec()] * len(split.fields), [P()] * len(split.replicated))
        out_specs = tuple([P()] * len(spacing) for _ in names)
        out = self._shard_map(body, in_specs, out_specs)(split.fields, split.replicated)
        return {name: list(speeds) for name, speeds in zip(names, out, strict=True)}

    # -- implicit sweeps along axis 0 --------------------------------------------------------------

    def face_rows(self, d, mask, coefficient, dx):
        """``coefficient · D_{k+½}/Δx²`` (harmonic face mean, times :func:`._stencils.face_open` of
        ``mask`` when given) on the faces along axis 0 as ``n`` rows split with the cells: row ``k`` is
        face ``k + ½``, the last row (the wall) 0 (:func:`._diffusion._face_rows`). One ghost row from
        the slab above."""
        split = _Split((d, mask, coefficient), self.shape)

        def body(fields, replicated):
            d_p, mask_p, c = split.rebuild(self._above(fields), replicated)
            rows = c * stencils.face_diffusivity(d_p, 0) / dx**2
            if mask_p is not None:
                rows = rows * stencils.face_open(mask_p, 0).astype(rows.dtype)
            m = self.shape[0] // self.n
            last = (lax.broadcasted_iota(jnp.int32, rows.shape, 0) == m - 1) & self._walls()[1]
            return jnp.where(last, jnp.zeros((), rows.dtype), rows)

        in_specs = ([self.field_spec()] * len(split.fields), [P()] * len(split.replicated))
        return self._shard_map(body, in_specs, self.field_spec())(split.fields, split.replicated)

    def _transpose(self, arrays, forward: bool):
        """Inside a ``shard_map``: local arrays between the x-slab and the transposed layout, one
        ``all_to_all`` for all of them (stacked per dtype)."""
        out = [None] * len(arrays)
        by_dtype = {}
        for i, a in enumerate(arrays):
            by_dtype.setdefault(jnp.dtype(a.dtype), []).append(i)
        for indices in by_dtype.values():
            x = jnp.stack([arrays[i] for i in indices])
            x = (
                lax.all_to_all(x, self.axis, 2, 1, tiled=True)
                if forward
                else lax.all_to_all(x, self.axis, 1, 2, tiled=True)
            )
            for k, i in enumerate(indices):
                out[i] = x[k]
        return out

    def sweep0(self, fields, rows, stage_rows):
        """One MPRK22 step along axis 0 of each of ``fields`` (:func:`._diffusion.mprk22_axis`), with
        face-weight ``rows`` (a number, or ``n`` rows split with the cells: :meth:`face_rows`) and, for a
        state-dependent ``D``, ``stage_rows[i](u1)`` the rows at the first stage (None: ``D`` constant).

        The fields and their row arrays are transposed together (one ``all_to_all``), solved along the
        now whole axis 0 and transposed back together; a state-dependent field returns its first stage
        instead, whose rows are evaluated on the slabs (the model's ``D``) and transposed for the second
        stage (one ``all_to_all`` each way more)."""
        ndim, n0 = len(self.shape), self.shape[0]
        split = _Split((list(fields), list(rows)), self.shape)
        dependent = [i for i, fn in enumerate(stage_rows) if fn is not None]

        def whole_rows(r, like):
            return r if jnp.ndim(r) else _face_rows(r, n0, ndim, like.dtype)

        def first(fields_x, replicated):
            us, rs = split.rebuild(self._transpose(fields_x, True), replicated)
            back, kept = [], []
            for i, (v, r) in enumerate(zip(us, rs, strict=True)):
                r = whole_rows(r, v)
                v1 = mprk22_first(v, r)
                back.append(v1 if i in dependent else mprk22_second(v, v1, r, r))
                if i in dependent:
                    kept.append((v, v1, r))
            return self._transpose(back, False), kept

        in_specs = ([self.field_spec()] * len(split.fields), [P()] * len(split.replicated))
        out_specs = ([self.field_spec()] * len(fields), [(self.spectral_spec(),) * 3] * len(dependent))
        out, kept = self._shard_map(first, in_specs, out_specs)(split.fields, split.replicated)
        if not dependent:
            return out
        stage = [stage_rows[i](out[i]) for i in dependent]

        def second(kept, stage_x):
            stage_y = self._transpose(stage_x, True)
            new = [mprk22_second(v, v1, r, r1) for (v, v1, r), r1 in zip(kept, stage_y, strict=True)]
            return self._transpose(new, False)

        in_specs = ([(self.spectral_spec(),) * 3] * len(dependent), [self.field_spec()] * len(dependent))
        new = self._shard_map(second, in_specs, [self.field_spec()] * len(dependent))(kept, stage)
        out = list(out)
        for i, u in zip(dependent, new, strict=True):
            out[i] = u
        return out

    # -- spectral transforms -----------------------------------------------------------------------

    def forward(self, x, dirichlet=False, batch: int = 0):
        """:func:`._spectral.to_spectral` of fields ``x`` (``batch`` leading stacking axes), from the
        x-slab layout to the transposed one: the local axes, one ``all_to_all``, then axis 0."""
        b = batch

        def body(local):
            y = spectral.to_spectral(local, dirichlet, b + 1)
            y = lax.all_to_all(y, self.axis, b + 1, b, tiled=True)
            y = spectral.to_spectral(jnp.moveaxis(y, b, -1), dirichlet, y.ndim - 1)
            return jnp.moveaxis(y, -1, b)

        return self._shard_map(body, (self.field_spec(b),), self.spectral_spec(b))(x)

    def inverse(self, x, dirichlet=False, batch: int = 0):
        """:func:`._spectral.from_spectral` of coefficients ``x`` in the transposed layout, back to
        the x-slab layout: axis 0, one ``all_to_all``, then the local axes."""
        b = batch

        def body(local):
            y = spectral.from_spectral(jnp.moveaxis(local, b, -1), dirichlet, local.ndim - 1)
            y = lax.all_to_all(jnp.moveaxis(y, -1, b), self.axis, b, b + 1, tiled=True)
            return spectral.from_spectral(y, dirichlet, b + 1)

        return self._shard_map(body, (self.spectral_spec(b),), self.field_spec(b))(x)

    def _many(self, items, transform) -> dict:
        """``transform`` of every item, those of one kind (``dirichlet``, dtype) stacked into one call."""
        groups = {}
        for name, (x, dirichlet) in items.items():
            groups.setdefault((bool(dirichlet), jnp.dtype(x.dtype)), []).append(name)
        out = {}
        for (dirichlet, _), names in groups.items():
            if len(names) == 1:
                out[names[0]] = transform(items[names[0]][0], dirichlet, 0)
                continue
            stacked = transform(jnp.stack([items[name][0] for name in names]), dirichlet, 1)
            out.update({name: stacked[i] for i, name in enumerate(names)})
        return out

    def forward_many(self, items) -> dict:
        """:meth:`OneDevice.forward_many`, one transpose per kind."""
        return self._many(items, self.forward)

    def inverse_many(self, items) -> dict:
        """:meth:`OneDevice.inverse_many`, one transpose per kind."""
        return self._many(items, self.inverse)

    def laplacian_symbol(self, spacing, dirichlet, dtype):
        """:func:`._spectral.laplacian_symbol` in ``dtype``, laid out as the spectral coefficients and
        built from its per-axis factors (no grid-sized constant): the same sum in float64 where x64 is
        on, so the same values."""
        ndim = len(self.shape)
        work = jnp.float64 if jax.config.jax_enable_x64 else dtype
        symbol = None
        for axis, (n, dx) in enumerate(zip(self.shape, spacing, strict=True)):
            wave = np.cos if dirichlet else np.sin
            eig = -(4.0 / dx**2) * wave(np.pi * np.arange(n) / (2 * n)) ** 2
            view = [1] * ndim
            view[axis] = n
            factor = jnp.asarray(eig.reshape(view), work)
            symbol = factor if symbol is None else symbol + factor
        symbol = jnp.broadcast_to(symbol, self.shape).astype(dtype)
        return lax.with_sharding_constraint(symbol, self.sharding(self.spectral_spec()))


def _rows(x) -> int:
    return x.shape[0]


def _local_face_speeds(padded, local, spacing):
    """Inside a ``shard_map``: per axis, per taxis term, the largest ``|χ ∂c/∂x|`` on this slab's faces
    (along axis 0 the faces 1/2 … m − 1/2, so that every interior face of the grid is counted once;
    at the high wall the reflected ghost gives 0), closed faces 0."""
    (taxis_p, mask_p), (taxis, mask) = padded, local
    m = _rows(taxis[0][1])
    out = []
    for axis, dx in enumerate(spacing):
        per_axis = []
        for (chi_p, c_p), (chi, c) in zip(taxis_p, taxis, strict=True):
            if axis == 0:
                velocity = jnp.abs(stencils.taxis_face_velocity(c_p, chi_p, 0, dx))[1 : m + 1]
                if mask_p is not None:
                    velocity = velocity * stencils.face_open(mask_p, 0)[1 : m + 1].astype(velocity.dtype)
            else:
                velocity = jnp.abs(stencils.taxis_face_velocity(c, chi, axis, dx))
                if mask is not None:
                    velocity = velocity * stencils.face_open(mask, axis).astype(velocity.dtype)
            per_axis.append(jnp.max(velocity))
        out.append(per_axis)
    return out


def _slab_transport(padded, local, width, spacing, at_low, at_high):
    """Inside a ``shard_map``: the transport of one :class:`._schemes.TransportTerm` on a slab, from the
    term with ghost layers (``padded``) and without (``local``). Along axis 0 the fluxes of the slab's
    ``m + 1`` faces come from the padded arrays; at a physical wall the wall face takes the one-device
    flux (0, or the fixed-value flux). Along the other axes it is :func:`._stencils.transport`'s."""
    u = local.u
    m = _rows(u)
    total = jnp.zeros_like(u)
    for axis, dx in enumerate(spacing):
        source = padded if axis == 0 else local
        open_faces = None if source.mask is None else stencils.face_open(source.mask, axis).astype(u.dtype)
        flux = stencils.axis_flux(source.u, axis, dx, source.diffusivity, source.taxis, open_faces)
        if flux is None:
            continue
        walls = stencils.wall_fluxes(u, axis, dx, local.diffusivity, local.wall, local.mask)
        if axis > 0:
            total = total + stencils._divergence_of_interior_flux(flux, axis, dx, walls)
            continue
        flux = flux[width - 1 : width + m]  # faces −1/2 … m − 1/2 of the slab
        low, high = (jnp.zeros_like(flux[:1]),) * 2 if walls is None else walls
        first = jnp.where(at_low, low, flux[:1])
        last = jnp.where(at_high, high, flux[m : m + 1])
        faces = jnp.concatenate([first, flux[1:m], last], axis=0)
        total = total + (faces[1:] - faces[:-1]) / dx
    return total
