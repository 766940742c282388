"""Online triplet miners: choose (anchor, positive, negative) index triplets from one batch.

One module per miner (:mod:`.semihard`, :mod:`.hard`, :mod:`.batch_all`), the shared sorted-rows
machinery in :mod:`.rows`, the interface in :mod:`.base`, the one list of miners in
:mod:`.registry`, and mining schedules ("semihard:0.4,hard") in :mod:`.schedule`.
"""

from .base import BatchAllCounts, LossForm, MinerSpec, Triplets
from .batch_all import count_batch_all, mine_batch_all
from .hard import mine_hard
from .registry import MINERS, describe_miners, get_miner, miner_names
from .schedule import ScheduleEntry, miner_for_epoch, parse_schedule
from .semihard import mine_semihard

__all__ = [
    "MINERS", "BatchAllCounts", "LossForm", "MinerSpec", "ScheduleEntry", "Triplets",
    "count_batch_all", "describe_miners", "get_miner", "mine_batch_all", "mine_hard", "mine_semihard",
    "miner_for_epoch", "miner_names", "parse_schedule",
]
