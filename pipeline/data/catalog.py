"""Published facts about the CIFAR archives: file names, checksums, layout, sizes.

Checksums are those of the original files from the dataset authors' site (the same values
Keras and torchvision verify against).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # "cifar10" | "cifar100"
    title: str
    folder: str  # folder inside the archive, e.g. "cifar-10-batches-py"
    archive: str  # published archive file name
    url: str
    archive_md5: str
    archive_sha256: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    file_md5: dict[str, str] = field(default_factory=dict)
    # label key in the batch dict and label-names key in the meta file, per label mode
    label_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    # images per class in the official train and test files, per label mode
    train_per_class: dict[str, int] = field(default_factory=dict)
    test_per_class: dict[str, int] = field(default_factory=dict)
    keras_cache_dir: str = ""  # folder Keras 3 extracts into under ~/.keras/datasets

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)

    def max_bytes(self, name: str) -> int:
        """The most a genuine file of this name can hold, with a margin: its images (3072
        bytes each), their labels and file names. A larger file or archive member is refused
        before it is extracted or read, so a crafted one cannot fill the disk or memory."""
        if name in self.train_files:
            images = 50_000 // len(self.train_files)
        elif name in self.test_files:
            images = 10_000 // len(self.test_files)
        else:
            return 1 << 20  # the meta file: class names only
        return int(images * 3072 * 1.05) + (2 << 20)

    @property
    def max_archive_bytes(self) -> int:
        """The most the whole archive can expand to."""
        return sum(self.max_bytes(name) for name in self.files)

    def num_classes(self, label_mode: str) -> int:
        train_images = 50_000
        return train_images // self.train_per_class[label_mode]


CIFAR10 = DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    archive_sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    file_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    label_keys={"fine": ("labels", "label_names")},
    train_per_class={"fine": 5000},
    test_per_class={"fine": 1000},
    keras_cache_dir="cifar-10-batches-py-target",
)

CIFAR100 = DatasetSpec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    archive_sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    file_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    label_keys={
        "fine": ("fine_labels", "fine_label_names"),
        "coarse": ("coarse_labels", "coarse_label_names"),
    },
    train_per_class={"fine": 500, "coarse": 2500},
    test_per_class={"fine": 100, "coarse": 500},
    keras_cache_dir="cifar-100-python-target",
)

DATASETS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}
