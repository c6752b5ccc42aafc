r"""IL1β–paclitaxel–macrophage model of Voloshin et al., Mol Cancer Ther 2015;14:1385.

Tumour cells ``n`` invade the matrix ``m`` (haptotaxis); macrophages ``M1``,
``M2`` are recruited from vessels ``v(x)`` and switch state under tumour cues
(→ M2), paclitaxel/TLR4 and IL1 signalling (→ M1). Macrophages make IL1β
``I`` (more under paclitaxel ``P``); IL1 signalling, antagonised competitively
by anakinra ``A``, raises tumour proliferation and invasiveness (``Φ_T``) and
keeps macrophages M1 (``Φ_H``). M2 make VEGF ``G``, which opens vessel leaks
``ℓ`` through which tumour cells intravasate, most where M2 sit (TMEM
doorways). Shed cells circulate, seed and grow as metastatic burden.

Units: mm, days; cell densities normalised to the carrying capacity; IL1β and
VEGF in pM; drugs in nM; matrix-degrading enzyme and chemoattractant in
normalised units. Every equation and parameter is listed in ``docs/model.md``.

Modules: :mod:`.kinetics` (signalling, reaction rates), :mod:`.parameters`,
:mod:`.pk` (plasma pharmacokinetics), :mod:`.vessels` (the prescribed vessel map),
:mod:`.spec` (the :data:`SYSTEM`), :mod:`.observables` (``observe``),
:mod:`.sections` (config sections) and :mod:`.model` (:class:`Voloshin2015`).
"""

from .model import Voloshin2015 as Voloshin2015
from .parameters import Parameters as Parameters
from .pk import Doses as Doses
from .spec import SYSTEM as SYSTEM

__all__ = ["Voloshin2015", "Parameters", "Doses", "SYSTEM"]
