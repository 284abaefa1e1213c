"""Data sets from tiny copies in their real on-disk forms (Omniglot, CIFAR-FS/FC100,
mini-ImageNet, tieredImageNet, CUB, image folders), episode samplers, augmentations."""
