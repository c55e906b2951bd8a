// effnet-train-synth PATH [image_size] [train_per_class] [seed]: writes the trainer tests'
// generated data set (synthetic_data.h) for demos and manual runs.
#include <cstdlib>
#include <iostream>

#include "tests/train/synthetic_data.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: effnet-train-synth PATH [image_size] [train_per_class] [seed]\n";
    return 2;
  }
  effnet::testing::SyntheticSpec s;
  if (argc > 2) s.image_size = std::atoi(argv[2]);
  if (argc > 3) s.train_per_class = std::atoi(argv[3]);
  if (argc > 4) s.seed = std::strtoull(argv[4], nullptr, 10);
  auto st = effnet::testing::WriteSyntheticStore(argv[1], s);
  if (!st.ok()) {
    std::cerr << st.ToString() << "\n";
    return 1;
  }
  return 0;
}
