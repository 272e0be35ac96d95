// Prints the node id of the broker leading one partition of a topic (-1 if
// none leads it now), through Apache Kafka's own admin client. Java 17 runs
// this single source file as is:
//
//   java -cp '<kafka.sh classpath>/*' tests/kafka/PartitionLeader.java \
//     BOOTSTRAP TOPIC PARTITION

import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public class PartitionLeader {
  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: PartitionLeader BOOTSTRAP TOPIC PARTITION");
      System.exit(2);
    }
    String topic = args[1];
    int partition = Integer.parseInt(args[2]);
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
    try (Admin admin = Admin.create(props)) {
      TopicDescription description =
          admin.describeTopics(List.of(topic)).allTopicNames().get(20, TimeUnit.SECONDS).get(topic);
      for (TopicPartitionInfo info : description.partitions()) {
        if (info.partition() == partition) {
          Node leader = info.leader();
          System.out.println(leader == null || leader.isEmpty() ? -1 : leader.id());
          return;
        }
      }
      System.err.println("topic " + topic + " has no partition " + partition);
      System.exit(1);
    }
  }
}
