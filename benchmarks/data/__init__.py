"""Datasets: the checked PASCAL VOC reader (:mod:`~benchmarks.data.voc`), the generated embedded
dataset (:mod:`~benchmarks.data.embedded`), the joint transforms (:mod:`~benchmarks.data.transforms`),
``prepare-data`` (:mod:`~benchmarks.data.prepare_data`) and the one data path every method is
trained and scored through (:mod:`~benchmarks.data.datasets`)."""
