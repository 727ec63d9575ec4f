"""PsyFactory: LLaMA-Factory configs and glue for Chinese mental-health fine-tuning.

One import name. The data-prep parsers and the eval plugins are the subpackages `psyfactory.data_prep` and
`psyfactory.plugins`, but their files stay in the checkout's top-level folders `data_prep/` and `plugins/`
(a reader finds each feature by its folder). A wheel maps those folders into `psyfactory/` at build time
(pyproject.toml `package-dir`), and the configs, benchmark files and Slurm templates into `psyfactory/share/`.
In a checkout there is no `psyfactory/share/`: the checkout root is then added to this package's search
path (`__path__`, the import system's own mechanism for where a package's submodules live), so that
`psyfactory.data_prep` is `data_prep/` and `psyfactory.plugins` is `plugins/`. docs/architecture.md,
"One package".
"""

import os as _os

__version__ = "0.1.0"

if not _os.path.isdir(_os.path.join(__path__[0], "share")):  # a checkout (or an editable install of one)
    __path__.append(_os.path.dirname(_os.path.abspath(__path__[0])))
