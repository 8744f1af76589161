"""Where CIFAR bytes come from, how they are parsed safely, split and summarised."""
